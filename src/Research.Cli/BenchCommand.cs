using System.CommandLine;
using Research.Abstractions;
using Research.Cli.Bench;
using Research.Core.Memory;
using Research.Core.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Cli;

/// <summary>
/// <c>research bench step</c>: in one process, interleaved repetitions of (1) the trainer's step against a
/// hand-written TorchSharp loop doing the same work — same model and initialisation, same batches, same loss, AdamW with
/// decay λ on every tensor in both, fp32, no clipping, logging off — on a GPT (causal-LM loss), a transformer classifier,
/// the demo MLP and a CNN; (2) the core AdamW step (flat buffers) against TorchSharp's built-in AdamW on a model with
/// ≥ 100 parameter tensors, the optimizer step alone. Prints the CPU, the native allocator in effect, an fp32 matmul's
/// FLOP/s, medians, spread (min–max), ratios of medians, page faults per step, tokens/s and the GPT's fraction of the
/// matmul's FLOP/s.
/// </summary>
static class BenchCommand
{
    /// <summary>The workloads also timed with EWC on (<see cref="EwcWorkload"/>): the transformer's 54 tensors and the
    /// MLP's step, where a penalty's per-tensor cost shows most.</summary>
    static readonly string[] EwcWorkloads = ["transformer", "mlp"];

    /// <summary>What <c>--workloads</c> may name: the step workloads, those with EWC on, then the optimizer-only comparison.</summary>
    static readonly IReadOnlyList<string> Workloads =
        [.. StepWorkload.Names, .. EwcWorkloads.Select(w => w + EwcWorkload.Suffix), "adamw"];

    static Option<string> Threads() => Cli.Value("--threads", "T", "Intra-op threads (1–256)", "2");
    static Option<string> Seed() => Cli.Value("--seed", "S", "The seed of models and data", "1");

    public static Command BenchGroup() => Cli.Group("bench", "Benchmarks: ratios against baselines measured in the same process, with the CPU",
        Cli.Command("step", "The trainer's step against a hand-written TorchSharp loop (GPT, transformer, MLP, CNN), and the core AdamW against TorchSharp's",
            Step,
            Cli.Value("--repetitions", "N", "Interleaved repetitions per side (5–1000)", "7"),
            Cli.Value("--steps", "S", "Steps per repetition (1–100000)", "10"),
            Threads(), Seed(),
            Cli.Value("--workloads", "LIST", $"Comma-separated, from: {string.Join(", ", Workloads)}; default: all")),
        Cli.Command("fisher", "The four Fisher variants against a per-sample loop", a =>
            {
                torch.set_num_threads(a.Int("--threads", 1, 256));
                FisherBench.Run(Console.Out, a.Int("--samples", 1, 1_000_000));
                return 0;
            },
            Cli.Value("--samples", "N", "Samples in the Fisher (1–1000000)", "10000"), Threads()),
        Cli.Command("hessian", "Hessian-vector products, Lanczos and the forgetting decomposition against naive baselines", a =>
            {
                torch.set_num_threads(a.Int("--threads", 1, 256));
                HessianBench.Run(Console.Out, a.Int("--samples", 1, 30_000), a.Int("--repetitions", 5, 1000), a.Int("--k", 1, 50),
                    a.Int("--train-steps", 0, 100_000), a.Long("--seed"));
                return 0;
            },
            Cli.Value("--samples", "N", "Samples the curvature is estimated on (1–30000)", "2000"),
            Threads(),
            Cli.Value("--repetitions", "R", "Timed repetitions (5–1000)", "5"),
            Cli.Value("--k", "K", "Top eigenpairs (1–50)", "20"),
            Cli.Value("--train-steps", "S", "Training steps before the measurement (0–100000)", "300"),
            Seed()));

    static int Step(Parsed a)
    {
        int repetitions = a.Int("--repetitions", 5, 1000), steps = a.Int("--steps", 1, 100_000), threads = a.Int("--threads", 1, 256);
        long seed = a.Long("--seed");
        var chosen = a.One("--workloads")?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries) ?? [.. Workloads];
        if (chosen.FirstOrDefault(w => !Workloads.Contains(w)) is { } unknown)
            throw new UsageException($"--workloads: unknown workload '{unknown}' (known: {string.Join(", ", Workloads)})");
        if (chosen.Length == 0) throw new UsageException("--workloads names no workload");
        torch.set_num_threads(threads);
        Console.WriteLine($"bench step: {repetitions} interleaved repetitions × {steps} steps per side, {threads} intra-op threads, " +
                          $"TorchSharp {typeof(torch).Assembly.GetName().Version}, CPU");
        Console.WriteLine($"cpu: {CpuModel.Describe()}");
        Console.WriteLine($"native allocator: {NativeAllocator.Setting}");

        // The matmul is timed before each workload and after the last, and the best median kept: a neighbour's load can
        // only slow it, and the GPT's fraction should not look better because the reference ran in a busy moment.
        var peaks = new List<double>();
        var results = new List<StepComparison>();
        var measured = new List<(StepComparison Comparison, string Name, long Tokens, double? Flops)>();
        foreach (var name in Workloads.Where(chosen.Contains))
        {
            peaks.Add(MatmulPeak.Measure(MatmulSize));
            if (name == "adamw") { results.Add(CoreAdamWAgainstBuiltIn(seed, repetitions, steps)); continue; }
            var ewc = name.EndsWith(EwcWorkload.Suffix, StringComparison.Ordinal);
            var (comparison, workload) = TrainerAgainstHandWritten(
                () => StepWorkload.Named(ewc ? name[..^EwcWorkload.Suffix.Length] : name, seed), repetitions, steps, ewc ? seed : null);
            results.Add(comparison);
            if (workload.Tokens is { } tokens) measured.Add((comparison, workload.Name, tokens, workload.Flops));
        }
        peaks.Add(MatmulPeak.Measure(MatmulSize));
        var peak = peaks.Max();
        Console.WriteLine();
        StepBench.Print(results);
        Console.WriteLine();
        Console.WriteLine($"fp32 matmul {MatmulSize}×{MatmulSize} @ {MatmulSize}×{MatmulSize}: {peak / 1e9:0.0} GFLOP/s " +
                          $"(the best of {peaks.Count} medians of 9 products, one before each workload and one after the last; all: {string.Join(", ", peaks.Select(p => $"{p / 1e9:0.0}"))})");
        foreach (var m in measured) Console.WriteLine(Throughput(m.Name, m.Comparison, m.Tokens, m.Flops, peak));
        Console.WriteLine($"resident memory: {ProcessCounters.ResidentBytes() / (1 << 20):N0} MiB now, {ProcessCounters.PeakResidentBytes() / (1 << 20):N0} MiB peak");
        return 0;
    }

    const double Lr = 1e-3, WeightDecay = 0.01;
    const long MatmulSize = 1024;

    /// <summary>Tokens per second of both sides and, given the step's useful FLOPs, their FLOP/s as a fraction of the matmul's.</summary>
    static string Throughput(string name, StepComparison c, long tokens, double? flops, double peak)
    {
        var line = $"{name}: hand-written loop {tokens / c.BaselineMedian:N0} tokens/s, trainer step {tokens / c.CandidateMedian:N0} tokens/s";
        if (flops is not { } f) return line;
        double Fraction(double seconds) => f / seconds / peak;
        return line + $"; {f / 1e9:0.00} GFLOP per step (6N + 12·L·T·d): {f / c.BaselineMedian / 1e9:0.0} and {f / c.CandidateMedian / 1e9:0.0} GFLOP/s, " +
               $"{Fraction(c.BaselineMedian):0.00} and {Fraction(c.CandidateMedian):0.00} of the matmul's {peak / 1e9:0.0} GFLOP/s";
    }

    /// <param name="ewcSeed">Given: both sides add EWC's penalty with θ* and F drawn from this seed (<see cref="EwcWorkload"/>).</param>
    static (StepComparison Comparison, (string Name, long? Tokens, double? Flops) Workload) TrainerAgainstHandWritten(
        Func<StepWorkload> make, int repetitions, int steps, long? ewcSeed = null)
    {
        // Two copies of the same model and batches: the baseline trains one, the trainer's step the other.
        using var baselineModel = make();
        using var candidateModel = make();
        var workload = baselineModel;
        var (anchor, fisher) = ewcSeed is { } s ? EwcWorkload.State(baselineModel.Model, s) : (new(), new());
        var meanLoss = ewcSeed is null ? baselineModel.MeanLoss : EwcWorkload.PenalisedLoss(baselineModel.MeanLoss, anchor, fisher);
        using var loop = new HandWrittenLoop(baselineModel.Model, baselineModel.Batches, meanLoss, Lr, WeightDecay);
        using var trainer = new TrainerLoop(candidateModel, Lr, WeightDecay, ewcSeed is null ? null : EwcWorkload.Methods(anchor, fisher));
        var label = ewcSeed is null ? workload.Name : $"{workload.Name}, with EWC (λ = {EwcWorkload.Lambda})";
        Console.WriteLine($"{label}: {workload.ParameterCount:N0} parameters in {workload.TensorCount} tensors, " +
                          $"batch {workload.Batches[0].Size}");
        var comparison = StepBench.Compare($"trainer step vs hand-written loop: {label}", loop.Step, () => trainer.Step(),
            repetitions: repetitions, stepsPerRepetition: steps);
        foreach (var t in anchor.Values.Concat(fisher.Values)) t.Dispose();
        return (comparison, (workload.Name, workload.TokensPerBatch, workload.UsefulFlopsPerBatch));
    }

    static StepComparison CoreAdamWAgainstBuiltIn(long seed, int repetitions, int steps)
    {
        using var builtInModel = StepWorkload.ManyTensors(seed);
        using var coreModel = StepWorkload.ManyTensors(seed);
        BuiltInAdamWStep.FillGradients(builtInModel.Model, builtInModel.Batches[0]);
        using var builtIn = new BuiltInAdamWStep(builtInModel.Model, Lr, WeightDecay);
        // The core adopts the parameters into flat buffers first; the backward then fills the flat gradient.
        using var core = Optimizer.AdamW(ParameterGroups.Assign(
            coreModel.Model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)), GroupRule.DecayByRank(WeightDecay)));
        using (var scope = NewDisposeScope())
            HandWrittenLoop.CrossEntropy(coreModel.Model, coreModel.Batches[0]).backward();
        void Candidate()
        {
            using var scope = NewDisposeScope();
            core.Step(Lr, returnDelta: false);
        }
        Console.WriteLine($"{coreModel.Name}: {coreModel.ParameterCount:N0} parameters in {coreModel.TensorCount} tensors (optimizer step only)");
        return StepBench.Compare($"core AdamW vs built-in AdamW: {coreModel.TensorCount} tensors", builtIn.Step, Candidate,
            repetitions: repetitions, stepsPerRepetition: steps);
    }
}
