using Research.Abstractions;
using System.CommandLine;
using System.Globalization;
using Research.Core.Memory;

namespace Research.Cli;

/// <summary>
/// <c>research memory</c>: the memory of full fine-tuning by component (<see cref="MemoryEstimate"/>), in GB and GiB,
/// then the seed chapter's 7B example beside the corrected figures and what it left out.
/// </summary>
public static class MemoryCommand
{
    const double GB = 1e9, GiB = 1L << 30;
    static readonly string[] ShapeOptions = ["--layers", "--hidden", "--heads", "--seq", "--batch"];
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static Command Definition() => Cli.Command("memory",
        "The memory of full fine-tuning by component — weights, gradients, fp32 master copy, optimizer moments, activations — " +
        "for a parameter count, or measured byte for byte on the model a config builds; then the seed chapter's 7B example corrected",
        Run,
        Cli.Value("--params", "P", "Parameters, e.g. 7e9"),
        // Defaults a researcher would pick today: bf16 mixed precision (no loss scaling) and AdamW.
        Cli.Value("--precision", "MODE", $"One of {string.Join(", ", Precision.ByName.Keys)}", "mixed-bf16"),
        Cli.Value("--optimizer", "NAME", $"One of {string.Join(", ", OptimizerState.ByName.Keys)}", "adamw"),
        Cli.Value("--layers", "L", "Transformer layers (activations need all five shape options)"),
        Cli.Value("--hidden", "H", "Hidden width"),
        Cli.Value("--heads", "A", "Attention heads"),
        Cli.Value("--seq", "S", "Sequence length"),
        Cli.Value("--batch", "B", "Micro-batch size"),
        Cli.Flag("--recompute", "Full activation recomputation: keep only each layer's input"),
        Cli.Value("--config", "CONFIG", "Instead: the model state of the model this run config builds, predicted and allocated"),
        Cli.Set());

    static int Run(Parsed a)
    {
        if (a.One("--config") is { } config) return ForConfig(config, a.All("--set"));
        if (a.One("--params") is null) throw new UsageException("memory needs --params, the number of parameters (e.g. --params 7e9), or --config CONFIG");
        // A thousand times the largest models trained today: beyond it the table is digits, not an estimate.
        var parameters = a.Double("--params", 0, 1e15);
        var precision = Lookup(Precision.ByName, "--precision", a.One("--precision")!);
        var optimizer = Lookup(OptimizerState.ByName, "--optimizer", a.One("--optimizer")!);
        var shape = ReadShape(a);
        if (a.Flag("--recompute") && shape is null)
            throw new UsageException($"--recompute needs the model's shape: {string.Join(" ", ShapeOptions)}");

        var estimate = new MemoryEstimate(parameters, precision, optimizer, shape, a.Flag("--recompute"));
        PrintEstimate(estimate);
        Console.WriteLine();
        PrintSeedExample(precision);
        return 0;
    }

    /// <summary>
    /// The exact model-state bytes of the model a run config builds: predicted from parameter counts
    /// (<see cref="ModelMemory.Predict"/>) and measured on the tensors the framework allocates.
    /// </summary>
    static int ForConfig(string path, IReadOnlyList<string> overrides)
    {
        var config = Research.Core.Config.ConfigLoader.Load(path, overrides);
        var (model, policy, optimizer, table) = Research.Core.Training.RunBuilder.ModelState(config);
        // The shape the run builds: a kind's options completed by the config.json beside init_from (a Hugging Face folder).
        var plan = Research.Core.Models.ModelPlan.Of(config, Research.Core.Training.RunBuilder.Shape(config));
        using var _model = model;
        using var _optimizer = optimizer;
        long trainable = optimizer.Buffer.Count, frozen = model.parameters().Sum(p => p.numel()) - trainable;
        var predicted = ModelMemory.Predict(trainable, frozen, policy.Mode, config.Optimizer.Name, config.Optimizer.Momentum);
        var measured = ModelMemory.Measure(model, optimizer);

        Console.WriteLine($"{config.File}: {config.Model.Kind} with {trainable + frozen:N0} parameters ({trainable:N0} trainable), " +
                          $"precision {config.Precision.Mode}, optimizer {config.Optimizer.Name}");
        if (Research.Core.Models.LlamaConfig.ConfigFileFor(plan.Context.InitPath) is { } hf && plan.Options is Research.Core.Models.Kinds.LlamaOptions llama)
            Console.WriteLine($"  shape from {hf}: {llama.ConfigFor(plan.Context.Data)}");
        foreach (var line in table) Console.WriteLine("  " + line);
        Console.WriteLine();
        var rows = Tables.Create(new("component"), new("predicted B", true), new("allocated B", true), new("MB", true));
        void Row(string name, long p, long m) =>
            Tables.Row(rows, name, p.ToString("N0", Inv), m.ToString("N0", Inv), (m / 1e6).ToString("F3", Inv));
        Row("weights", predicted.Weights, measured.Weights);
        Row("gradients", predicted.Gradients, measured.Gradients);
        Row("fp32 master weights", predicted.MasterWeights, measured.MasterWeights);
        Row("fp32 master gradients", predicted.MasterGradients, measured.MasterGradients);
        Row("optimizer moments", predicted.Moments, measured.Moments);
        Row("total model state", predicted.Total, measured.Total);
        Tables.Write(rows);
        // A transformer kind says its shape: the activations of one micro-batch, estimated (they are not allocated here).
        if (Research.Core.Models.ModelKinds.MemoryShape(config, plan) is { } shape)
            Console.WriteLine($"activations of a micro-batch of {shape.Batch} × {shape.Sequence} tokens, estimated for {shape.Layers} layers of width " +
                              $"{shape.Hidden} (Korthikanti et al. 2022, 16-bit; fp32 about twice): {shape.ActivationBytes(recompute: false) / 1e6:F1} MB");
        Console.WriteLine(predicted == measured
            ? "allocated = predicted, byte for byte (activations are not counted)"
            : "allocated differs from predicted: the memory model is out of date");
        var componentsAgree = PrintComponents(config, plan, model, optimizer, policy.Mode, measured);
        return predicted == measured && componentsAgree ? 0 : 1;
    }

    /// <summary>
    /// The same model state by component, when the model has components: those <c>[[optimizer.components]]</c> names
    /// (and <c>other</c>), else a vision-language model's top-level modules. Each row predicted from the component's counts
    /// and read off its own tensors and its slices of the optimizer's flat tensors; then each component's activations,
    /// where a kind can estimate them. False when a component's bytes differ from its prediction or the components do not
    /// add up to the whole model's.
    /// </summary>
    static bool PrintComponents(Research.Core.Config.RunConfig config, Research.Core.Models.ModelPlan plan, TorchSharp.torch.nn.Module model,
        Research.Core.Optim.Optimizer optimizer, Research.Core.Precision.PrecisionMode mode, ModelMemory whole)
    {
        var rules = Research.Core.Training.RunBuilder.Plan(config.Optimizer).Components ?? [];
        if (rules.Count == 0 && model is not Research.Core.Models.Vlm) return true;
        var components = ComponentMemory.Of(model, optimizer, ComponentMemory.ComponentOf(rules), mode, config.Optimizer.Name, config.Optimizer.Momentum);
        Console.WriteLine();
        Console.WriteLine(rules.Count > 0 ? "by component ([[optimizer.components]]; bytes):" : "by component (the model's top-level modules; bytes):");
        // fp32 keeps no master copy: its two columns would be zeros.
        bool master = optimizer.HasMasterCopy;
        var rows = Tables.Create([new("component"), new("parameters", true), new("trainable", true), new(""), new("weights", true), new("gradients", true),
            .. master ? new Tables.Column[] { new("fp32 master weights", true), new("fp32 master gradients", true) } : [],
            new("optimizer moments", true), new("total", true), new("MB", true)]);
        string N(long v) => v.ToString("N0", Inv);
        void Row(string name, string parameters, string trainable, string what, ModelMemory m) =>
            Tables.Row(rows, [name, parameters, trainable, what, N(m.Weights), N(m.Gradients),
                .. master ? new[] { N(m.MasterWeights), N(m.MasterGradients) } : [], N(m.Moments), N(m.Total), (m.Total / 1e6).ToString("F3", Inv)]);
        foreach (var c in components)
        {
            Row(c.Name, N(c.Parameters), N(c.Trainable), "predicted", c.Predicted);
            Row("", "", "", "allocated", c.Allocated);
        }
        var sum = ComponentMemory.Sum(components.Select(c => c.Allocated));
        Row("sum", N(components.Sum(c => c.Parameters)), N(components.Sum(c => c.Trainable)), "allocated", sum);
        Tables.Write(rows);

        // Activations: the kind's transformer shape is the language model's (ModelKind.MemoryShape); no kind estimates
        // a convolutional encoder's or the connector's, so they are said to be missing rather than guessed.
        // It belongs to a component only when one component holds the language model's parameters and nothing else.
        var shape = Research.Core.Models.ModelKinds.MemoryShape(config, plan);
        var componentOf = ComponentMemory.ComponentOf(rules);
        var names = model.named_parameters().Select(p => (p.name, Component: componentOf(p.name))).ToList();
        var holders = names.Where(p => p.name.StartsWith("language_model.", StringComparison.Ordinal)).Select(p => p.Component).Distinct().ToList();
        string? transformer = model is Research.Core.Models.Vlm && holders.Count == 1
            && names.All(p => p.Component != holders[0] || p.name.StartsWith("language_model.", StringComparison.Ordinal)) ? holders[0] : null;
        Console.WriteLine($"activations of a micro-batch of {config.Data.BatchSize}, by component (not allocated here):");
        foreach (var c in components)
            Console.WriteLine(c.Name == transformer && shape is { } s
                ? $"  {c.Name}: {s.ActivationBytes(recompute: false) / 1e6:F1} MB, estimated for {s.Layers} layers of width {s.Hidden} on {s.Sequence} positions (Korthikanti et al. 2022, 16-bit)"
                : $"  {c.Name}: not estimated{(shape is null || transformer is not null ? "" : model is Research.Core.Models.Vlm
                    ? " (the estimate above is the language model's, which these components split)" : " (the estimate above is the whole model's)")}");

        bool each = components.All(c => c.Predicted == c.Allocated), adds = sum == whole;
        Console.WriteLine(each && adds
            ? "each component: allocated = predicted, byte for byte; the components add up to the whole model's bytes"
            : !each ? $"allocated differs from predicted for {string.Join(", ", components.Where(c => c.Predicted != c.Allocated).Select(c => c.Name))}: the memory model is out of date"
            : "the components do not add up to the whole model's bytes: a parameter or a slice is counted twice or not at all");
        return each && adds;
    }

    static T Lookup<T>(IReadOnlyDictionary<string, T> byName, string option, string name) =>
        byName.TryGetValue(name, out var v) ? v
            : throw new UsageException($"unknown {option} '{name}' (valid: {string.Join(", ", byName.Keys)})");

    /// <summary>The shape is all five options or none: activations from a partial shape would be a guess.</summary>
    static TransformerShape? ReadShape(Parsed a)
    {
        var given = ShapeOptions.Where(o => a.One(o) is not null).ToList();
        if (given.Count == 0) return null;
        var missing = ShapeOptions.Except(given).ToList();
        if (missing.Count > 0)
            throw new UsageException($"activations need {string.Join(" ", ShapeOptions)} together; missing {string.Join(", ", missing)}");
        // Bounds far beyond any transformer trained today (a million-token context, a 256k-wide layer), so that a slip of
        // the keyboard is refused rather than printed as a 40-digit byte count.
        var shape = new TransformerShape(a.Long("--layers", 1, 10_000), a.Long("--hidden", 1, 262_144), a.Long("--heads", 1, 4_096),
            a.Long("--seq", 1, 1_048_576), a.Long("--batch", 1, 65_536));
        if (shape.Hidden % shape.Heads != 0)
            throw new UsageException($"--hidden {shape.Hidden} must be a multiple of --heads {shape.Heads}");
        return shape;
    }

    static void PrintEstimate(MemoryEstimate e)
    {
        Console.WriteLine($"Full fine-tuning of {e.Parameters.ToString("0.###e0", Inv)} parameters, {e.Precision.Name}, {e.Optimizer.Name}");
        Console.WriteLine($"  {e.Precision.Name}: {e.Precision.Summary}");
        Console.WriteLine();
        var rows = e.Components.Where(c => c.Kind != Component.Activations)
            .Select(c => (Label(c.Kind, e), c.BytesPerParameter.ToString(), c.Bytes))
            .Append(("model state", e.ModelStateBytesPerParameter.ToString(), e.ModelState))
            .Concat(e.Shape is null ? [] : [(Label(Component.Activations, e), "", e.Activations)])
            .Append((e.Shape is null ? "total (activations not estimated)" : "total", "", e.Total))
            .ToList();
        var width = rows.Max(r => r.Item1.Length) + 2;
        Console.WriteLine($"{"component".PadRight(width)}{"B/param",8}{"GB",12}{"GiB",12}");
        foreach (var (label, perParameter, bytes) in rows)
            Console.WriteLine($"{label.PadRight(width)}{perParameter,8}{Size(bytes / GB),12}{Size(bytes / GiB),12}");
        Console.WriteLine();
        if (e.Shape is not { } s)
        {
            Console.WriteLine($"activations: give {string.Join(" ", ShapeOptions)} to estimate them (Korthikanti et al. 2022)");
            return;
        }
        Console.WriteLine(e.Recompute
            ? "activations: 2·s·b·h bytes per layer, full recomputation keeps only each layer's input (Korthikanti et al. 2022, Table 2)"
            : "activations: s·b·h·(34 + 5·a·s/h) bytes per layer, 16-bit, no recomputation (Korthikanti et al. 2022, Eq. 1)");
        var terms = e.Recompute ? $"s = {s.Sequence}, b = {s.Batch}, h = {s.Hidden}"
            : $"s = {s.Sequence}, b = {s.Batch}, h = {s.Hidden}, a = {s.Heads}: 5·a·s/h = {s.AttentionTerm.ToString("0.##", Inv)}";
        Console.WriteLine($"  {terms}; {s.ActivationBytesPerLayer(e.Recompute).ToString("N0", Inv)} bytes per layer × {s.Layers} layers; "
            + "embeddings and logits not counted");
    }

    static string Label(Component kind, MemoryEstimate e) => kind switch
    {
        Component.Weights => $"weights ({e.Precision.WeightType})",
        Component.Gradients => $"gradients ({e.Precision.WeightType})",
        Component.MasterCopy => e.Precision.MasterBytes > 0 ? "fp32 master copy" : "fp32 master copy (none)",
        Component.OptimizerMoments => $"optimizer moments ({e.Optimizer.Name}: {e.Optimizer.Slots}{(e.Optimizer.BytesPerParameter > 0 ? ", fp32" : "")})",
        Component.Activations => $"activations ({e.Shape!.Layers} layers{(e.Recompute ? ", recomputed" : "")})",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>Two decimals; three significant digits below 0.1 so a small model does not print as 0.00.</summary>
    static string Size(double v) =>
        v >= 0.1 || v == 0 ? v.ToString("F2", Inv) : v >= 1e-4 ? v.ToString("G3", Inv) : v.ToString("0.##e0", Inv);

    /// <summary>
    /// The seed's line for this precision (its fp32 line for fp32, its mixed-precision row otherwise) beside the same
    /// 7B AdamW model state computed here; activations are the seed's own figure in both rows (it names no shape).
    /// </summary>
    static void PrintSeedExample(Precision precision)
    {
        var (seed, label, correctedPrecision) = precision == Precision.Fp32
            ? (SeedChapter.Fp32, "fp32 line", Precision.Fp32)
            : (SeedChapter.MixedPrecision, "mixed-precision row", Precision.MixedFp16);
        // The corrected row is a real 7B model, Llama-2-7B's shape counted by the llama kind (6,738,415,616 parameters),
        // not the seed's round 7e9.
        var llama = Research.Core.Models.LlamaConfig.Llama2_7B;
        var corrected = new MemoryEstimate(llama.ParameterCount, correctedPrecision, OptimizerState.Adam);
        var activations = seed.Figures.TryGetValue(Component.Activations, out var act) ? act : (double?)null;
        string Approx(double v) => (activations is null ? "" : "~") + v.ToString("0.#", Inv);

        Console.WriteLine($"The seed chapter's 7B example ({label}, AdamW, GB){(activations is null ? "" : "; its activation figure is kept, it names no shape")}:");
        Console.WriteLine($"  as given: {seed.AsGiven} (for {SeedChapter.Parameters.ToString("0.#e0", Inv)} parameters)");
        Console.WriteLine($"  corrected: Llama-2-7B ({Research.Core.Models.LlamaConfig.Llama2_7BFile}: {llama})");
        const string row = "  {0,-14}{1,9}{2,11}{3,13}{4,11}{5,13}{6,9}";
        Console.WriteLine(row, "", "weights", "gradients", "fp32 master", "optimizer", "activations", "total");
        string Seed(Component k) => seed.Figures.TryGetValue(k, out var v) ? (k == Component.Activations ? "~" : "") + v.ToString("0.#", Inv) : "-";
        Console.WriteLine(row, "seed chapter", Seed(Component.Weights), Seed(Component.Gradients), Seed(Component.MasterCopy),
            Seed(Component.OptimizerMoments), Seed(Component.Activations), Approx(seed.Total));
        string Gb(double bytes) => (bytes / GB).ToString("0.#", Inv);
        Console.WriteLine(row, "Llama-2-7B", Gb(corrected.Weights), Gb(corrected.Gradients), Gb(corrected.MasterCopy),
            Gb(corrected.OptimizerMoments), Seed(Component.Activations), Approx(corrected.ModelState / GB + (activations ?? 0)));

        // What the seed left out is counted at its own 7e9, the figure its row was computed from.
        var atSeed = new MemoryEstimate(SeedChapter.Parameters, correctedPrecision, OptimizerState.Adam);
        var omitted = seed.OmittedFrom(atSeed).Select(c => Omission(c.Kind, correctedPrecision, Gb(c.Bytes)));
        var terms = string.Join(" + ", corrected.Components.Where(c => c.BytesPerParameter > 0).Select(c => c.BytesPerParameter));
        Console.WriteLine($"The seed's {label} leaves out {string.Join(" and ", omitted)}: the model state is {terms} = "
            + $"{corrected.ModelStateBytesPerParameter} B/param, {Gb(atSeed.ModelState)} GB at the seed's 7e9 and {Gb(corrected.ModelState)} GB for "
            + $"Llama-2-7B's {llama.ParameterCount.ToString("N0", Inv)} parameters, before activations (ZeRO, Rajbhandari et al. 2020).");
        if (precision == Precision.PureBf16)
        {
            var pure = new MemoryEstimate(llama.ParameterCount, Precision.PureBf16, OptimizerState.Adam);
            Console.WriteLine($"pure-bf16 keeps no master copy, {pure.ModelStateBytesPerParameter} B/param = {Gb(pure.ModelState)} GB: the seed's model "
                + "state, right only for pure 16-bit training, which loses small updates.");
        }
    }

    static string Omission(Component kind, Precision p, string gb) => kind switch
    {
        Component.MasterCopy => $"the {gb} GB fp32 master copy, the weights the optimizer actually updates under mixed precision",
        Component.Gradients => $"the {gb} GB of {p.WeightType} gradients, one per weight",
        _ => $"the {gb} GB of {kind}",
    };
}
