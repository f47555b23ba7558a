using System.Diagnostics;
using System.Text.RegularExpressions;
using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Forgetting;
using Research.Core.Tasks;
using Research.Core.Tracking;
using Research.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Hessian;

/// <summary>
/// One point of the decomposition: task j's loss at a later point θ_p (the end of task i, or a point inside it), with
/// Δθ = θ_p − θ_j. <see cref="Measured"/> is L_j(θ_p) − L_j(θ_j) on the items the Hessian uses, <see cref="MeasuredTest"/>
/// the same on task j's test split (as the study's matrix L has it); the prediction is
/// <see cref="FirstOrder"/> ∇L_j·Δθ plus <see cref="Quadratic"/> ½ΔθᵀH_jΔθ (the seed chapter's forgetting formula;
/// EWC keeps only a diagonal of the quadratic term, <see cref="FisherQuadratic"/> ½Σ F_k Δθ_k² per Fisher variant).
/// </summary>
/// <param name="Fraction">How far into task i the point lies (its step over the task's planned steps; 1 at its end).</param>
/// <param name="TopKNormShare">‖P_kΔθ‖²/‖Δθ‖², P_k the projection on H_j's top-k eigenvectors.</param>
/// <param name="TopKQuadraticShare">Σ_{m≤k} λ_m (v_mᵀΔθ)² / ΔθᵀH_jΔθ: the part of the quadratic term the top-k
/// eigen-directions carry (above 1 when the rest of the spectrum contributes negatively).</param>
/// <param name="GroupQuadratic">½ Δθ_gᵀ(H_jΔθ)_g per parameter group g: sums to <see cref="Quadratic"/> (cross terms are
/// split between the two groups they couple).</param>
/// <remarks><see cref="GroupDeltaNormSquared"/>: ‖Δθ_g‖² per group, which sums to <see cref="DeltaNormSquared"/> — how far
/// each component moved, beside what its move cost.</remarks>
public sealed record DecompositionPoint(
    int Later, int Earlier, long Step, double Fraction,
    double DeltaNormSquared, double LossBefore, double LossAfter, double Measured, double MeasuredTest,
    double FirstOrder, double Quadratic, double TopKNormShare, double TopKQuadraticShare,
    IReadOnlyDictionary<string, double> FisherQuadratic, IReadOnlyDictionary<string, double> GroupQuadratic)
{
    public double Predicted => FirstOrder + Quadratic;

    public IReadOnlyDictionary<string, double> GroupDeltaNormSquared { get; init; } = new Dictionary<string, double>();
}

/// <summary>
/// The forgetting decomposition of a study (issue "Forgetting explained"): for each finished task j, its curvature at θ_j
/// (<see cref="TaskCurvature"/>); for each later point θ_p, the measured loss increase against the quadratic model.
/// Computed at task ends during a study (<c>[study] hessian</c>) and afterwards on stored snapshots
/// (<c>research analyze hessian</c>) by the same code. Everything it draws comes from its own seeded streams
/// (<c>hessian/…</c>), so it changes neither the training nor the run's identity.
/// </summary>
/// <remarks>
/// The items: a seeded draw of <c>samples</c> training items of task j, the same draw at task j's end and at every later
/// pair (stream <c>hessian/task-j/items</c>), so the measured increase and the prediction read the same loss. The model of
/// each point is a fresh fp32 instance of the run's architecture (the run's trained model is never touched) loaded from
/// the snapshot, with the run's frozen parameters frozen, so the layout is the trainable parameters of the run.
/// </remarks>
public sealed class ForgettingDecomposition(RunComponents run, RunLayout layout, Action<string> message)
{
    readonly RunConfig config = run.Config;
    readonly HessianSection _h = run.Config.Study.Hessian;
    readonly IReadOnlyList<TaskData> tasks = run.Tasks;
    readonly OutputTask output = run.Task;
    readonly Func<nn.Module<Tensor, Tensor>> newModel = run.NewModel;
    /// <summary>The run's frozen parameters stay frozen in every model of a snapshot, so the layout is the run's trainable ones.</summary>
    readonly IReadOnlySet<string> frozen = run.Model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => p.name).ToHashSet();

    /// <summary>The Fisher variants computed: the ones asked for, or every variant the output admits.</summary>
    public IReadOnlyList<FisherKind> FisherKinds { get; } = FisherVariants(run.Config.Study.Hessian, run.Task);

    static IReadOnlyList<FisherKind> FisherVariants(HessianSection h, OutputTask output) =>
        h.Fisher.Length > 0 ? h.Fisher
        : output is CausalLmTask ? [FisherKind.Sampled, FisherKind.Empirical, FisherKind.Batched]
        : [FisherKind.Exact, FisherKind.Sampled, FisherKind.Empirical, FisherKind.Batched];

    /// <summary>What <c>[study] hessian</c> asks that the data cannot give, checked before a run folder exists.</summary>
    public static IEnumerable<ConfigError> Check(RunConfig c, DataShape shape)
    {
        if (c.Study.Hessian.Enabled && shape.NextToken && c.Study.Hessian.Fisher.Contains(FisherKind.Exact))
            yield return new(c.File, "study.hessian.fisher", "names \"exact\", which is not defined for sequences (a V^T-term sum per sequence); use \"sampled\"");
    }

    /// <summary>Everything the saved curvature depends on besides the snapshot: every key of <c>[study] hessian</c> but
    /// the points along (which change no curvature), the variants computed and the seed — written from the bound section,
    /// so a key added to it is part of the key without being listed here.</summary>
    string Settings => System.Text.Json.JsonSerializer.Serialize(_h with { SnapshotsAlong = 0 }) +
                       $" fisher={string.Join(",", FisherKinds.Select(Name))} seed={config.Run.Seed}";

    static string Name(FisherKind k) => k.ToString().ToLowerInvariant();

    /// <summary>The snapshot of task i's end (the study writes it after the task's evaluation).</summary>
    public string TaskEnd(int task) => layout.TaskEndWeights(task);

    /// <summary>The products one task end costs at most: the gradient (1), Lanczos (iterations plus k recomputed
    /// residuals), the trace probes, and one product per later point.</summary>
    public string Cost(int taskCount, long samples)
    {
        int k = _h.TopK, iterations = _h.MaxIterations > 0 ? _h.MaxIterations : Lanczos.DefaultMaxIterations(k);
        long perTask = 1 + iterations + k + _h.TraceProbes;
        int pointsPerPair = Math.Max(1, _h.SnapshotsAlong);
        long pairs = (long)taskCount * (taskCount - 1) / 2;
        return $"Hessian analysis ({_h.Curvature}, {_h.Precision}) on {samples} items per task: at each task end at most " +
               $"{perTask} curvature-vector products (Lanczos top-{k}: ≤ {iterations} iterations + {k} residuals; " +
               $"{_h.TraceProbes} trace probes; the gradient), each a pass over the items costing about 2–3 gradients; " +
               $"then one product per earlier task and point ({pairs} pairs × {pointsPerPair} point(s) in all), and " +
               $"{FisherKinds.Count} diagonal Fisher(s) per task";
    }

    /// <summary>Task j's curvature at θ_j: read from <c>hessian/task-j/</c> when a task end saved it, else computed
    /// and saved.</summary>
    public TaskCurvature Curvature(int j)
    {
        if (TaskCurvature.Load(layout.Curvature(j), Settings) is { } saved) return saved;
        var clock = Stopwatch.StartNew();
        using var items = Items(j);
        var batches = Batches(items);
        using var model = Load(TaskEnd(j));
        using var op = Operator(model, batches.List);
        try
        {
            using var scope = NewDisposeScope();
            var (loss, gradient) = op.LossAndGradient();
            using var lanczosStream = Seeds.Generator(config.Run.Seed, $"hessian/task-{j}/lanczos");
            var eigen = Lanczos.TopEigenpairs(op.AsFunction(), op.Dimension, (int)Math.Min(_h.TopK, op.Dimension), lanczosStream,
                _h.Tolerance, _h.MaxIterations > 0 ? _h.MaxIterations : null);
            TraceEstimate? trace = null;
            if (_h.TraceProbes > 0)
            {
                using var probes = Seeds.Generator(config.Run.Seed, $"hessian/task-{j}/trace");
                trace = Hutchinson.Trace(op.AsFunction(), op.Dimension, _h.TraceProbes, probes);
            }
            var fisher = new Dictionary<string, Tensor>();
            foreach (var kind in FisherKinds)
            {
                using var labels = Seeds.Generator(config.Run.Seed, $"hessian/task-{j}/fisher-{Name(kind)}");
                using var result = Forgetting.Fisher.Compute(model, batches.List, kind, kind == FisherKind.Sampled ? labels : null, task: output);
                fisher[Name(kind)] = op.Layout.Flatten(result.Diagonal, ScalarType.Float64).MoveToOuterDisposeScope();
            }
            var curvature = new TaskCurvature
            {
                Task = j, Loss = loss, Gradient = gradient.to(ScalarType.Float64).MoveToOuterDisposeScope(),
                Eigenvalues = eigen.Eigenvalues, Residuals = eigen.Residuals, Converged = eigen.Converged, Iterations = eigen.Iterations,
                Eigenvectors = eigen.Eigenvectors.to(ScalarType.Float32).MoveToOuterDisposeScope(),
                Trace = trace?.Estimate ?? double.NaN, TraceError = trace?.StandardError ?? double.NaN,
                Fisher = fisher, Samples = items.Count, Items = op.Items, Products = op.Products, Seconds = clock.Elapsed.TotalSeconds,
                Settings = Settings,
            };
            eigen.Dispose();
            curvature.Save(layout.Curvature(j));
            message($"task {j}: Hessian on {items.Count} items ({op.Items} counted), loss {loss:F4}, top eigenvalues " +
                    string.Join(" ", curvature.Eigenvalues.Take(5).Select(l => l.ToString("G4"))) +
                    (curvature.Eigenvalues.Count > 5 ? " …" : "") +
                    (double.IsNaN(curvature.Trace) ? "" : $", trace {curvature.Trace:G4} ± {curvature.TraceError:G2}") +
                    $"; {(eigen.Converged ? "converged" : "NOT converged")} in {eigen.Iterations} Lanczos steps, {op.Products} products, {clock.Elapsed.TotalSeconds:F1} s");
            return curvature;
        }
        finally { batches.Dispose(); }
    }

    /// <summary>
    /// The decomposition of every earlier task j &lt; i at the end of task i and at the points saved inside it. Each task's
    /// curvature is read from its folder (computed there if missing).
    /// </summary>
    public IReadOnlyList<DecompositionPoint> Pairs(int i)
    {
        var points = layout.AlongPoints(i).Append((StepInTask: -1L, Path: TaskEnd(i))).ToList();
        var result = new List<DecompositionPoint>();
        for (int j = 0; j < i; j++)
        {
            using var curvature = Curvature(j);
            using var items = Items(j);
            var batches = Batches(items);
            try
            {
                using var modelJ = Load(TaskEnd(j));
                using var op = Operator(modelJ, batches.List);
                using var thetaJ = op.Layout.Parameters(modelJ, ScalarType.Float64);
                var groups = Groups(op.Layout);
                var testBefore = TestLoss(modelJ, j);
                // A point's place: its steps since task i began over the task's planned steps (early stopping shortens).
                long planned = Math.Max(1, run.StepsOf(i));
                foreach (var (step, path) in points)
                {
                    using var scope = NewDisposeScope();
                    using var modelP = Load(path);
                    using var opP = Operator(modelP, batches.List);
                    var lossAfter = opP.Loss();
                    var delta = op.Layout.Parameters(modelP, ScalarType.Float64).sub_(thetaJ);
                    var hDelta = op.Apply(delta);
                    double quadratic = 0.5 * delta.dot(hDelta).item<double>();
                    double first = curvature.Gradient.dot(delta).item<double>();
                    double norm2 = delta.dot(delta).item<double>();
                    var projections = curvature.Eigenvectors.to(ScalarType.Float64).mv(delta);
                    var eigenvalues = tensor(curvature.Eigenvalues.ToArray(), dtype: ScalarType.Float64);
                    double topNorm = projections.square().sum().item<double>();
                    double topQuadratic = 0.5 * (eigenvalues * projections.square()).sum().item<double>();
                    var fisher = curvature.Fisher.ToDictionary(f => f.Key, f => 0.5 * (f.Value * delta.square()).sum().item<double>());
                    var contribution = delta * hDelta;
                    var byGroup = groups.ToDictionary(g => g.Key, g => 0.5 * (contribution * g.Value).sum().item<double>());
                    long at = step >= 0 ? step : -1;
                    double fraction = step >= 0 ? (double)step / planned : 1.0;
                    result.Add(new DecompositionPoint(i, j, at, fraction, norm2, curvature.Loss, lossAfter, lossAfter - curvature.Loss,
                        TestLoss(modelP, j) - testBefore, first, quadratic,
                        norm2 > 0 ? topNorm / norm2 : double.NaN, quadratic != 0 ? topQuadratic / quadratic : double.NaN, fisher, byGroup)
                    {
                        GroupDeltaNormSquared = groups.ToDictionary(g => g.Key, g => (delta.square() * g.Value).sum().item<double>()),
                    });
                }
                foreach (var g in groups.Values) g.Dispose();
            }
            finally { batches.Dispose(); }
        }
        return result;
    }

    /// <summary>Task j's mean test loss at a model (the matrix L's value).</summary>
    double TestLoss(nn.Module<Tensor, Tensor> model, int j) =>
        Evaluation.Run(model, tasks[j].Test, config.Data.EvalBatchSize, null, output).Loss;

    /// <summary>The seeded draw of task j's training items the curvature reads.</summary>
    TensorDataset Items(int j)
    {
        using var draw = Seeds.Generator(config.Run.Seed, $"hessian/task-{j}/items");
        return tasks[j].Train.Sample(_h.Samples, draw);
    }

    /// <summary>Batches as views of <paramref name="items"/> that live as long as it does (the operator keeps them).</summary>
    Owned Batches(TensorDataset items)
    {
        int size = _h.BatchSize > 0 ? _h.BatchSize : config.Data.EvalBatchSize;
        var list = new List<Batch>();
        for (long start = 0; start < items.Count; start += size)
        {
            long rows = Math.Min(size, items.Count - start);
            list.Add(new Batch(items.Tensors.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.narrow(0, start, rows).DetachFromDisposeScope()))));
        }
        return new Owned(list);
    }

    sealed class Owned(List<Batch> list) : IDisposable
    {
        public List<Batch> List => list;
        public void Dispose() { foreach (var b in list) b.DisposeTensors(); }
    }

    CurvatureOperator Operator(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> batches) =>
        new(model, batches, _h.Curvature == "gauss-newton" ? CurvatureKind.GaussNewton : CurvatureKind.Hessian,
            _h.Precision == "fp64" ? CurvaturePrecision.Float64 : CurvaturePrecision.Float32, output, newModel);

    /// <summary>A fresh fp32 model with a snapshot's weights (strict), the run's frozen parameters frozen.</summary>
    nn.Module<Tensor, Tensor> Load(string snapshot)
    {
        if (!File.Exists(snapshot)) throw new FileNotFoundException($"the Hessian analysis needs the snapshot {snapshot}", snapshot);
        var model = newModel();
        try
        {
            WeightFile.Load(model, snapshot, strict: true, []);
            foreach (var (name, p) in model.named_parameters()) p.requires_grad = !frozen.Contains(name);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Parameter groups for the split of the quadratic term: the optimizer's components where one matches (a VLM's vision
    /// tower, projector, language model), else the module that holds the parameter (<c>hidden.0.weight</c> → <c>hidden.0</c>).
    /// Masks are flat float64 0/1 vectors over the layout.
    /// </summary>
    Dictionary<string, Tensor> Groups(ParameterLayout layout)
    {
        var components = config.Optimizer.Components.Select(c => (c.Name, Regex: new Regex(c.Match))).ToList();
        string GroupOf(string name) =>
            components.FirstOrDefault(c => c.Regex.IsMatch(name)).Name
            ?? (name.LastIndexOf('.') is var dot and > 0 ? name[..dot] : name);
        return layout.Names.Select(GroupOf).Distinct().ToDictionary(g => g, g => layout.Mask(n => GroupOf(n) == g).DetachFromDisposeScope());
    }
}

/// <summary>
/// The decomposition as probes of a study's record (<see cref="ProbeNames"/>): T × T matrices whose row i, column j is the
/// value for task j at the end of task i (NaN for j ≥ i), per-task rows of the spectrum, and the points inside each task
/// laid out as row i, column j·m + p (p = 0 … m − 1, the last the task's end).
/// </summary>
public static class DecompositionProbes
{
    /// <summary>Row i's probes (each a vector) from the points of task i and the curvature of task i itself.</summary>
    public static Dictionary<string, double[]> Row(int i, int taskCount, int pointsPerTask, IReadOnlyList<DecompositionPoint> points,
        TaskCurvature own)
    {
        int T = taskCount, m = Math.Max(1, pointsPerTask);
        var row = new Dictionary<string, double[]>
        {
            [ProbeNames.HessianEigenvalues] = own.Eigenvalues.ToArray(),
            [ProbeNames.HessianTrace] = [own.Trace, own.TraceError],
            [ProbeNames.HessianLoss] = [own.Loss],
        };
        var ends = points.Where(p => p.Later == i && p.Step < 0).ToList();
        double[] Matrix(Func<DecompositionPoint, double> f)
        {
            var values = Enumerable.Repeat(double.NaN, T).ToArray();
            foreach (var p in ends) values[p.Earlier] = f(p);
            return values;
        }
        row[ProbeNames.QuadraticLossIncrease] = Matrix(p => p.Quadratic);
        row[ProbeNames.FirstOrderLossIncrease] = Matrix(p => p.FirstOrder);
        row[ProbeNames.PredictedLossIncrease] = Matrix(p => p.Predicted);
        row[ProbeNames.MeasuredLossIncrease] = Matrix(p => p.Measured);
        row[ProbeNames.MeasuredTestLossIncrease] = Matrix(p => p.MeasuredTest);
        row[ProbeNames.TopKNormShare] = Matrix(p => p.TopKNormShare);
        row[ProbeNames.TopKQuadraticShare] = Matrix(p => p.TopKQuadraticShare);
        row[ProbeNames.DeltaNormSquared] = Matrix(p => p.DeltaNormSquared);
        foreach (var variant in points.SelectMany(p => p.FisherQuadratic.Keys).Distinct())
            row[ProbeNames.FisherQuadraticLossIncrease + "/" + variant] = Matrix(p => p.FisherQuadratic.GetValueOrDefault(variant, double.NaN));
        foreach (var group in points.SelectMany(p => p.GroupQuadratic.Keys).Distinct())
            row[ProbeNames.QuadraticLossIncrease + "/" + group] = Matrix(p => p.GroupQuadratic.GetValueOrDefault(group, double.NaN));
        foreach (var group in points.SelectMany(p => p.GroupDeltaNormSquared.Keys).Distinct())
            row[ProbeNames.DeltaNormSquared + "/" + group] = Matrix(p => p.GroupDeltaNormSquared.GetValueOrDefault(group, double.NaN));

        // The points inside task i, in step order per earlier task, its end last.
        var along = new Dictionary<string, Func<DecompositionPoint, double>>
        {
            ["fraction"] = p => p.Fraction,
            ["measured"] = p => p.Measured,
            ["measured_test"] = p => p.MeasuredTest,
            ["first_order"] = p => p.FirstOrder,
            ["quadratic"] = p => p.Quadratic,
            ["predicted"] = p => p.Predicted,
            ["top_k_norm_share"] = p => p.TopKNormShare,
            ["top_k_quadratic_share"] = p => p.TopKQuadraticShare,
        };
        foreach (var variant in points.SelectMany(p => p.FisherQuadratic.Keys).Distinct())
            along["fisher_" + variant] = p => p.FisherQuadratic.GetValueOrDefault(variant, double.NaN);
        foreach (var (name, f) in along)
        {
            var values = Enumerable.Repeat(double.NaN, T * m).ToArray();
            foreach (var group in points.Where(p => p.Later == i).GroupBy(p => p.Earlier))
            {
                var ordered = group.OrderBy(p => p.Step < 0 ? long.MaxValue : p.Step).ToList();
                // The last m points (the task's end among them): with fewer saved, the first entries stay NaN.
                for (int q = 0; q < Math.Min(m, ordered.Count); q++)
                    values[group.Key * m + (m - 1 - q)] = f(ordered[ordered.Count - 1 - q]);
            }
            row[ProbeNames.HessianAlong + "/" + name] = values;
        }
        return row;
    }
}
