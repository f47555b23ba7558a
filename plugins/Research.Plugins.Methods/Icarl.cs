using System.Text.Json;
using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

/// <summary>Which classifier iCaRL's evaluations use.</summary>
public enum IcarlClassifier
{
    /// <summary>The nearest mean of exemplars (the paper's classifier).</summary>
    NearestMean,
    /// <summary>The model's own arg-max: the same training, scored by the network's output layer (an ablation).</summary>
    Model,
}

public sealed record IcarlOptions
{
    /// <summary>K: exemplars the memory holds at most, over all classes (K/t per class once t classes are seen).</summary>
    [Option(Min = 1, Max = 10_000_000)]
    public int Memory { get; init; } = 500;
    /// <summary>r: exemplars appended per current-task item in each micro-batch, as replay's mix_ratio (0: none are replayed).</summary>
    [Option(Min = 0, Max = 100)]
    public double MixRatio { get; init; } = 1.0;
    /// <summary>α: the weight of the distillation on the classes seen before, α·T²·KL(softmax(z_old/T) ‖ softmax(z/T)) per
    /// item over those classes' outputs (0: no distillation).</summary>
    [Option(Min = 0, Max = 1000)]
    public double Distillation { get; init; } = 1.0;
    /// <summary>T, the softmax temperature of the distillation.</summary>
    [Option(Min = 0, MinExclusive = true, Max = 1000)]
    public double Temperature { get; init; } = 2;
    /// <summary><c>nearest-mean</c> (the nearest mean of exemplars, the paper's) or <c>model</c> (the network's arg-max).</summary>
    public IcarlClassifier Classifier { get; init; } = IcarlClassifier.NearestMean;
}

/// <summary>
/// iCaRL (Rebuffi, Kolesnikov, Sperl &amp; Lampert 2017, "iCaRL: Incremental classifier and representation learning"): a
/// class-balanced memory of K exemplars chosen by herding, replayed with every batch, distillation toward the previous
/// task's network on the classes seen before, and the nearest mean of exemplars as the classifier. With φ(x) the
/// representation (the input of the model's final Linear) and φ̂ = φ/max(‖φ‖₂, 10⁻¹²). Exemplars, by herding (the
/// paper's Algorithm 4): for a class with items X, μ = mean_{x∈X} φ̂(x), and for k = 1 … m,
/// p_k = argmin_{x∈X∖{p₁…p_{k−1}}} ‖μ − (φ̂(x) + Σ_{j&lt;k} φ̂(p_j))/k‖₂ (ties: the first item); at each task end every
/// class gets m = K/t exemplars (t classes seen; the remainder one each to the smallest class ids), and an older class
/// keeps its first m (Algorithm 5: herding's order is its priority). Classifier, the nearest mean of exemplars
/// (Algorithm 1): μ_y = normalised(mean_{p∈P_y} φ̂(p)) with the current weights, y* = argmin_y ‖φ̂(x) − μ_y‖₂ over the
/// classes with exemplars (ties: the smallest class id); before any task has ended, the model's arg-max. Loss:
/// L = (Σ_cur ℓ + Σ_mem ℓ)/N + α T² Σᵢ KL(softmax(z_old,S/T) ‖ softmax(z_S/T))/N, ℓ the core's softmax cross-entropy,
/// S the classes of the tasks ended so far, z_old the logits of the network as it was at the latest task end.
/// </summary>
/// <remarks>
/// <para>Departures from the paper: the classification and distillation losses are the core's softmax cross-entropy plus
/// a temperature-scaled KL over the old classes (LwF's form, as the <c>lwf</c> built-in computes it, so against replay
/// the loss differs only by the distillation), not the paper's per-class sigmoid binary cross-entropy with the old
/// network's sigmoid outputs as targets on the old classes (which Avalanche's <c>ICaRL</c> strategy keeps, in its
/// <c>ICaRLLossPlugin</c>); the
/// exemplars are mixed into each micro-batch at r exemplars per new item (as replay mixes them) rather than the paper's
/// training set of new items and exemplars shuffled together; the class means are taken over the exemplars' features
/// only, without the paper's horizontally flipped copies. The means follow the current weights: they are computed again
/// when the step or the memory has changed since the last ones (and kept with the state, so a resume reads the same).</para>
/// <para>In a study the predictor's task end runs before the task's row is evaluated, so row i is scored with the
/// exemplars of every class seen up to task i. An evaluation during a task's training knows only the exemplars of the
/// tasks before it: the classes being learned have no mean yet, so its validation accuracy counts them as wrong. The
/// memory needs class targets [B]; the classifier needs one representation per scored row.</para>
/// <para>Each task end adds the probe row <c>icarl_memory_items</c> = [exemplars in memory].</para>
/// </remarks>
[Plugin("icarl", Summary = "iCaRL: herded class-balanced exemplars replayed, distillation on old classes, nearest-mean-of-exemplars classifier")]
public sealed class Icarl(IcarlOptions options) : IDataRole, ILossTerm, ITaskHooks, IPredictor, IStateful
{
    const string TeacherPrefix = "teacher", SeenKey = "seen_classes", MeansKey = "class_means", CountsKey = "class_exemplars";
    const string FillsKey = "fills", MeansStepKey = "means_step", MeansFillKey = "means_fill";

    readonly EpisodicMemory _memory = new(MemorySelection.ClassBalanced, options.Memory);
    /// <summary>The weights at the latest task end, by parameter name: the distillation's teacher.</summary>
    Dictionary<string, Tensor>? _teacher;
    /// <summary>The classes in memory after the latest task end (int64 [s], ascending): the distilled outputs.</summary>
    Tensor? _seen;
    /// <summary>μ_y (float64 [C, d]) and |P_y| (int64 [C]) as last computed, at step <see cref="_meansStep"/> from the memory
    /// of fill <see cref="_meansFill"/>.</summary>
    Tensor? _means, _counts;
    long _fills, _meansStep = -1, _meansFill = -1;

    public double MixRatio => options.MixRatio;

    public long Count => _memory.Count;

    public Batch Sample(int items, Generator random) => _memory.Sample(items, random);

    public void Observe(Batch batch, int taskIndex, Generator random) => _memory.Observe(batch, taskIndex, random);

    public void TaskStart(TaskStartContext context) => _memory.Start(context.TaskIndex);

    /// <summary>Herds the ended task's exemplars (every task, the last one included: the classifier needs them), trims the
    /// older classes to the new quota, and keeps the network as the next task's teacher.</summary>
    public void TaskEnd(TaskEndContext context)
    {
        var features = TaskFeatures(context);
        _memory.Fill(context, (positions, quota) =>
        {
            using var index = tensor(positions);
            using var own = features.index_select(0, index);
            return Herding.Select(own, (int)quota).Select(k => positions[k]);
        });
        _fills++;
        if (_memory.All is { } items) _seen = items.TargetsTensor.unique(sorted: true).output;
        if (!context.IsLastTask) _teacher = SquaredDistance.Snapshot(context.Parameters);
        context.AddProbe("icarl_memory_items", [_memory.Stored]);
    }

    /// <summary>φ̂ of every item of the task's data, in order (float64 [N, d]).</summary>
    static Tensor TaskFeatures(TaskEndContext context)
    {
        var parts = context.Data.Select(b => context.Representation(b).to(ScalarType.Float64)).ToList();
        if (parts.Count == 0) return zeros([0, 1], dtype: ScalarType.Float64);
        return Herding.Normalise(cat(parts, 0));
    }

    /// <summary>α T² Σᵢ KL(softmax(z_old,S/T) ‖ softmax(z_S/T)) over the batch's counted rows, S the classes seen before.</summary>
    public Tensor? Loss(LossTermContext context)
    {
        if (_teacher is null || _seen is null || options.Distillation == 0) return null;
        var logits = context.Logits;
        if (logits.dim() != 2 || !context.Batch.ContainsKey(Batch.Targets) || context.Batch.TargetsTensor.dim() != 1)
            throw new InvalidOperationException($"icarl: the distillation needs class logits [B, C] with targets [B]; these logits are [{string.Join(", ", logits.shape)}]");
        var seen = _seen.to(logits.device);
        var t = options.Temperature;
        var logTeacher = (context.LogitsWith(_teacher, context.Batch).index_select(1, seen) / t).log_softmax(-1);
        var logStudent = (logits.index_select(1, seen) / t).log_softmax(-1);
        var perRow = (logTeacher.exp() * (logTeacher - logStudent)).sum(-1) * context.Batch.ItemMask();
        return perRow.sum().mul(options.Distillation * t * t);
    }

    /// <summary>The nearest mean of exemplars (or the model's arg-max, by option or while the memory is empty).</summary>
    public Tensor Predict(PredictContext context)
    {
        var logits = context.Logits;
        if (options.Classifier == IcarlClassifier.Model || _memory.All is not { } items) return logits.argmax(-1);
        var features = Herding.Normalise(context.Representation(context.Batch).to(ScalarType.Float64));
        if (features.shape[0] != logits.shape[0])
            throw new InvalidOperationException($"icarl: the nearest mean of exemplars classifies one item per row; this batch has {features.shape[0]} items and {logits.shape[0]} rows");
        if (_means is null || _meansStep != context.Step || _meansFill != _fills || _means.shape[0] != logits.shape[^1])
        {
            var exemplars = Herding.Normalise(context.Representation(items).to(ScalarType.Float64));
            (_means, _counts) = NearestMean.ClassMeans(exemplars, items.TargetsTensor.to(exemplars.device), logits.shape[^1]);
            (_meansStep, _meansFill) = (context.Step, _fills);
        }
        return NearestMean.Predict(features, _means.to(features.device), _counts!.to(features.device));
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() => StateEntries.Of(_memory.State(), StateEntries.Prefixed(TeacherPrefix, _teacher),
        StateEntries.One(SeenKey, _seen), StateEntries.One(MeansKey, _means), StateEntries.One(CountsKey, _counts));

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        _memory.Load(state);
        _teacher = StateEntries.Part(state, TeacherPrefix);
        (_seen, _means, _counts) = (StateEntries.Entry(state, SeenKey), StateEntries.Entry(state, MeansKey), StateEntries.Entry(state, CountsKey));
    }

    public IReadOnlyDictionary<string, object?> StateValues() =>
        new Dictionary<string, object?> { [FillsKey] = _fills, [MeansStepKey] = _meansStep, [MeansFillKey] = _meansFill };

    public void LoadStateValues(IReadOnlyDictionary<string, JsonElement> values)
    {
        long Read(string key, long otherwise) => values.TryGetValue(key, out var v) ? v.GetInt64() : otherwise;
        (_fills, _meansStep, _meansFill) = (Read(FillsKey, 0), Read(MeansStepKey, -1), Read(MeansFillKey, -1));
    }
}

/// <summary>Herding (Welling 2009; iCaRL's Algorithm 4): the items whose running mean stays closest to the class mean.</summary>
public static class Herding
{
    /// <summary>Rows scaled to unit L2 norm, x/max(‖x‖₂, 10⁻¹²) (a zero row stays zero), as iCaRL normalises features.</summary>
    public static Tensor Normalise(Tensor x)
    {
        using var norm = x.norm(1, keepdim: true);
        using var floor = norm.clamp_min(1e-12);
        return x / floor;
    }

    /// <summary>
    /// m = min(<paramref name="m"/>, n) distinct rows of <paramref name="features"/> [n, d] (already normalised), in the
    /// order chosen: μ = mean of the rows, and for k = 1 … m, p_k = argmin over rows not yet chosen of
    /// ‖μ − (x + Σ_{j&lt;k} p_j)/k‖₂, the first row on a tie. In float64.
    /// </summary>
    public static long[] Select(Tensor features, int m)
    {
        using var x = features.to(ScalarType.Float64);
        long n = x.shape[0];
        var chosen = new long[Math.Min(Math.Max(m, 0), n)];
        if (chosen.Length == 0) return chosen;
        using var mu = x.mean([0]);
        using var sum = zeros_like(mu);
        // +∞ on the rows chosen already, so they are never chosen twice.
        using var taken = zeros([n], dtype: ScalarType.Float64);
        for (int k = 0; k < chosen.Length; k++)
        {
            using var candidates = x.add(sum);
            candidates.div_(k + 1).sub_(mu).pow_(2);
            using var distance = candidates.sum(1);
            distance.add_(taken);
            using var best = distance.argmin();
            var i = best.item<long>();
            chosen[k] = i;
            using var row = x[i];
            sum.add_(row);
            using var at = tensor(new[] { i });
            taken.index_fill_(0, at, double.PositiveInfinity);
        }
        return chosen;
    }
}

/// <summary>The nearest-mean-of-exemplars classifier (iCaRL's Algorithm 1).</summary>
public static class NearestMean
{
    /// <summary>μ_y = normalised(mean of the rows of class y) (float64 [C, d]; a class without rows has a zero row) and the
    /// rows per class (int64 [C]), from normalised features [n, d] and their classes [n].</summary>
    public static (Tensor Means, Tensor Counts) ClassMeans(Tensor normalised, Tensor classes, long classCount)
    {
        var x = normalised.to(ScalarType.Float64);
        var sums = zeros([classCount, x.shape[1]], dtype: ScalarType.Float64, device: x.device).index_add(0, classes, x, 1);
        var counts = zeros([classCount], dtype: ScalarType.Int64, device: x.device).index_add(0, classes, ones_like(classes), 1);
        return (Herding.Normalise(sums / counts.clamp_min(1).unsqueeze(1).to(ScalarType.Float64)), counts);
    }

    /// <summary>argmin_y ‖x − μ_y‖₂ for every row of <paramref name="normalised"/> [n, d], over the classes whose count is
    /// positive (the smallest class id on a tie), as int64 [n].</summary>
    public static Tensor Predict(Tensor normalised, Tensor means, Tensor counts)
    {
        var distance = (normalised.to(ScalarType.Float64).unsqueeze(1) - means.unsqueeze(0)).square().sum(-1);
        return distance.masked_fill(counts.eq(0).unsqueeze(0), double.PositiveInfinity).argmin(-1);
    }
}
