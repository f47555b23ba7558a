using Research.Abstractions;
using Research.Core.Bench;
using Research.Core.Optim;
using Research.Core.Precision;
using Research.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Cli;

/// <summary>
/// <c>research bench step</c>: in one process, interleaved repetitions of (1) the trainer's step against a
/// hand-written TorchSharp loop doing the same work — same model and initialisation, same batches, AdamW with
/// decay λ on every tensor in both, fp32, no clipping, logging off — on a transformer-sized model and on the
/// demo MLP; (2) the core AdamW step (flat buffers) against TorchSharp's built-in AdamW on a model with ≥ 100
/// parameter tensors, the optimizer step alone. Prints medians, spread (min–max) and ratios of medians.
/// </summary>
static class BenchCommand
{
    public static int Run(string[] argv)
    {
        var a = new Args(argv, ["--repetitions", "--steps", "--threads", "--seed", "--samples"], []);
        if (a.Positional is ["fisher"])
        {
            torch.set_num_threads(a.Int("--threads", 2, 1, 256));
            FisherBench.Run(Console.Out, a.Int("--samples", 10000, 1, 1_000_000));
            return 0;
        }
        if (a.Positional is not ["step"]) throw new UsageException("bench takes one benchmark: step or fisher");
        int repetitions = a.Int("--repetitions", 7, 1, 1000), steps = a.Int("--steps", 10, 1, 100_000), threads = a.Int("--threads", 2, 1, 256);
        long seed = a.Long("--seed", 1);
        if (repetitions < 5) throw new UsageException("--repetitions must be ≥ 5");
        if (steps < 1 || threads < 1) throw new UsageException("--steps and --threads must be ≥ 1");
        torch.set_num_threads(threads);
        Console.WriteLine($"bench step: {repetitions} interleaved repetitions × {steps} steps per side, {threads} intra-op threads, " +
                          $"TorchSharp {typeof(torch).Assembly.GetName().Version}, CPU");

        var results = new List<StepComparison>
        {
            TrainerAgainstHandWritten(() => StepWorkload.Transformer(seed), repetitions, steps),
            TrainerAgainstHandWritten(() => StepWorkload.Mlp(seed), repetitions, steps),
            CoreAdamWAgainstBuiltIn(seed, repetitions, steps),
        };
        Console.WriteLine();
        StepBench.Print(results);
        return 0;
    }

    const double Lr = 1e-3, WeightDecay = 0.01;

    static StepComparison TrainerAgainstHandWritten(Func<StepWorkload> make, int repetitions, int steps)
    {
        // Two copies of the same model and batches: the baseline trains one, the trainer's step the other.
        using var baselineModel = make();
        using var candidateModel = make();
        var workload = baselineModel;
        using var loop = new HandWrittenLoop(baselineModel.Model, baselineModel.Batches, Lr, WeightDecay);
        var everyTensorDecays = new[] { new GroupRule(new ParameterGroup("all", 1.0, WeightDecay), (_, _) => true) };
        using var optimizer = Optimizer.AdamW(ParameterGroups.Assign(
            candidateModel.Model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)), everyTensorDecays));
        var step = new TrainStep(candidateModel.Model, optimizer, PrecisionPolicy.Fp32, MethodSet.None, clipNorm: 0);
        int next = 0;
        void Candidate()
        {
            var batch = candidateModel.Batches[next];
            next = (next + 1) % candidateModel.Batches.Count;
            step.Run([batch], Lr, measureNorm: false);   // logging off, as in the hand-written loop
        }
        Console.WriteLine($"{workload.Name}: {workload.ParameterCount:N0} parameters in {workload.TensorCount} tensors, " +
                          $"batch {workload.Batches[0].Size}");
        return StepBench.Compare($"trainer step vs hand-written loop: {workload.Name}", loop.Step, Candidate,
            repetitions: repetitions, stepsPerRepetition: steps);
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
            nn.functional.cross_entropy(coreModel.Model.forward(coreModel.Batches[0][Batch.Input]), coreModel.Batches[0].TargetsTensor).backward();
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
