using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Precision;
using static TorchSharp.torch;

namespace Research.Core.Probes;

/// <summary>
/// The <c>[probes]</c> of one run: what training did to the representation (the input of the model's <c>head</c>,
/// <see cref="Representation"/>), measured after each phase against the starting model's. The starting model's features
/// and linear-probe accuracy are computed once, before the first step, and kept in <c>probes/start.safetensors</c> of
/// the run folder, so a resumed run compares with the same start.
/// </summary>
/// <remarks>
/// The values, by name (<see cref="Names"/>): <c>probe_cka</c>, linear CKA with the unbiased HSIC estimator
/// (<see cref="LinearCka"/>); <c>probe_similarity_spearman</c>, the rank agreement of the two models' pairwise cosine
/// similarities (<see cref="SimilarityAgreement"/>); <c>probe_linear_accuracy</c> and <c>probe_linear_accuracy_start</c>,
/// the test accuracy of a logistic-regression probe fitted on frozen features of <c>linear_classes</c>
/// (<see cref="LinearProbe"/>).
/// </remarks>
public sealed class RunProbes : IDisposable
{
    public static class Names
    {
        public const string Cka = "probe_cka", Similarity = "probe_similarity_spearman",
            LinearAccuracy = "probe_linear_accuracy", LinearAccuracyStart = "probe_linear_accuracy_start";
    }

    const string FileName = "start.safetensors", FeaturesKey = "features", LinearKey = "linear_accuracy";

    readonly ProbesSection _c;
    readonly int _batchSize;
    readonly PrecisionPolicy _precision;
    readonly TensorDataset? _items;
    readonly TaskData? _linear;
    readonly string _module;
    Tensor? _startFeatures;
    double _startLinear = double.NaN;

    RunProbes(ProbesSection c, int batchSize, PrecisionPolicy precision, TensorDataset? items, TaskData? linear, string module)
        => (_c, _batchSize, _precision, _items, _linear, _module) = (c, batchSize, precision, items, linear, module);

    /// <summary>The probes a config asks for, over its tasks' test splits (null when it asks for none); the linear probe
    /// reads [data]'s source (<paramref name="data"/>) again.</summary>
    public static RunProbes? Create(RunConfig c, DataQuery data, IReadOnlyList<TaskData> tasks, PrecisionPolicy precision)
    {
        var p = c.Probes;
        if (!p.Any) return null;
        TensorDataset? items = null;
        TaskData? linear = null;
        try
        {
            if (p.Cka || p.Similarity) items = HeldOut(tasks, p.Items, c.Run.Seed);
            if (p.LinearClasses.Length > 0) linear = LinearData(c, data);
            // Where the representation is read is the model kind's to say.
            var module = ModelKinds.Of(c.Model).Representation(c.Model.Options);
            return new RunProbes(p, c.Data.EvalBatchSize, precision, items, linear, module);
        }
        catch
        {
            items?.Dispose(); linear?.Dispose();
            throw;
        }
    }

    /// <summary>What <c>[probes]</c> needs that only the data can refuse: checked before any data loads.</summary>
    public static IEnumerable<ConfigError> Check(RunConfig c, DataShape shape)
    {
        var p = c.Probes;
        if (p.LinearClasses.Length > 0 && shape.IsText)
            yield return new(c.File, "probes.linear_classes", $"selects classes of an image dataset; \"{shape.Source}\" is text");
        else if (p.LinearClasses.Length > 0 && shape.Classes is var n && p.LinearClasses.Any(k => k >= n))
            yield return new(c.File, "probes.linear_classes", $"[{string.Join(", ", p.LinearClasses)}] names a class the dataset does not have (classes 0–{n - 1})");
        // Captions of images carry each item's class (labels), which the probes of the encoder's features read.
        if (p.Any && shape.NextToken && shape.Input != InputKind.ImagesAndTokens)
            yield return new(c.File, "probes", "reads the input of a classifier's head; a causal language model has none (data.task = \"causal-lm\")");
    }

    /// <summary>The first N items of the tasks' test splits in an order drawn from (seed, "probes/items").</summary>
    static TensorDataset HeldOut(IReadOnlyList<TaskData> tasks, int n, long seed)
    {
        using var all = TensorDataset.Concat(tasks.Select(t => t.Test).ToList());
        using var g = Seeds.Generator(seed, "probes/items");
        return all.Sample(n, g);
    }

    /// <summary>The linear probe's data: the dataset's items of <c>linear_classes</c>, labels renumbered 0…k−1 in that
    /// order, a validation holdout drawn from (seed, "probes/validation-split"), and their test split.</summary>
    static TaskData LinearData(RunConfig c, DataQuery data)
    {
        var classes = c.Probes.LinearClasses;
        using var full = data.Load();
        var (fullTrain, fullTest) = (full.Train, full.Test);
        using var chosen = fullTrain.WithClasses(classes);
        using var limited = chosen.Take(c.Probes.LinearTrainLimit);
        var (train, validation) = limited.Holdout(c.Data.ValidationFraction, Seeds.Generator(c.Run.Seed, "probes/validation-split"));
        using var test = fullTest.WithClasses(classes);
        using (train) using (validation)
            return new TaskData("linear probe", Renumbered(train, classes), Renumbered(validation, classes), Renumbered(test, classes));
    }

    static TensorDataset Renumbered(TensorDataset d, int[] classes)
    {
        using var lookup = full(classes.Max() + 1, -1L, dtype: ScalarType.Int64);
        for (int i = 0; i < classes.Length; i++) lookup[classes[i]] = i;
        return new TensorDataset(d.Tensors.Select(kv => KeyValuePair.Create(kv.Key,
            kv.Key == d.ClassLabelsName ? lookup.index_select(0, kv.Value) : kv.Value.clone())), classes.Length);
    }

    /// <summary>The starting model's features and linear-probe accuracy: read from <paramref name="folder"/> (the run folder's <c>probes/</c>) when a
    /// resumed run has them, else computed and written there. A resumed run without them cannot have them: its model
    /// is no longer the start.</summary>
    public void Start(nn.Module<Tensor, Tensor> model, string folder, bool resumed, Action<string> message)
    {
        var path = Path.Combine(folder, FileName);
        if (resumed && !File.Exists(path))
            throw new InvalidDataException($"{path} is missing: the probes compare with the starting model, and a resumed run's model is no longer it (was [probes] added to the config after the run started?)");
        if (File.Exists(path))
        {
            var saved = Checkpoint.Load(Path.GetDirectoryName(path)!, FileName);
            _startFeatures = saved.GetValueOrDefault(FeaturesKey);
            if (saved.TryGetValue(LinearKey, out var a)) { _startLinear = a.item<double>(); a.Dispose(); }
            return;
        }
        var tensors = new List<(string, Tensor)>();
        if (_items is not null)
        {
            _startFeatures = Features(model, _items);
            tensors.Add((FeaturesKey, _startFeatures));
        }
        using var linear = _linear is null ? null : tensor(_startLinear = LinearAccuracy(model, message, "starting"));
        if (linear is not null) tensors.Add((LinearKey, linear));
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        WeightFile.Save(tensors, path);
    }

    /// <summary>The probes of the current model, by name (<see cref="Names"/>).</summary>
    public IReadOnlyDictionary<string, double> Measure(nn.Module<Tensor, Tensor> model, Action<string> message)
    {
        var values = new Dictionary<string, double>();
        if (_items is not null)
        {
            using var now = Features(model, _items);
            if (_c.Cka) values[Names.Cka] = LinearCka.Unbiased(_startFeatures!, now);
            if (_c.Similarity) values[Names.Similarity] = SimilarityAgreement.Spearman(_startFeatures!, now);
        }
        if (_linear is not null)
        {
            values[Names.LinearAccuracy] = LinearAccuracy(model, message, "current");
            values[Names.LinearAccuracyStart] = _startLinear;
        }
        return values;
    }

    Tensor Features(nn.Module<Tensor, Tensor> model, TensorDataset d) => Representation.Features(model, d.InOrder(_batchSize), _precision, _module);

    /// <summary>A probe fitted on the model's frozen features of the linear classes, scored on their test split.</summary>
    double LinearAccuracy(nn.Module<Tensor, Tensor> model, Action<string> message, string which)
    {
        var d = _linear!;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var scope = NewDisposeScope();
        using var fit = LinearProbe.Fit(Features(model, d.Train), d.Train.ClassLabels, Features(model, d.Validation), d.Validation.ClassLabels, d.Train.NumClasses);
        var accuracy = fit.Accuracy(Features(model, d.Test), d.Test.ClassLabels);
        message($"linear probe on the {which} features ({d.Train.Count} items, {d.Train.NumClasses} classes): L2 {fit.L2:G2} chosen on " +
                $"validation ({fit.ValidationAccuracy:F4}){(fit.Converged ? "" : $", NOT converged in {fit.Iterations} iterations")}; test accuracy {accuracy:F4} ({clock.Elapsed.TotalSeconds:F1} s)");
        return accuracy;
    }

    public void Dispose()
    {
        _items?.Dispose();
        _linear?.Dispose();
        _startFeatures?.Dispose();
    }
}
