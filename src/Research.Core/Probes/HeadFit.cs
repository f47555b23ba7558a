using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Precision;
using TorchSharp.Modules;
using Research.Core.Training;
using static TorchSharp.torch;

namespace Research.Core.Probes;

/// <summary>
/// <c>model.head_init = "linear-probe"</c>: the head fitted, before any step, to the frozen starting body — a multinomial
/// logistic regression on the features of the training split (<see cref="Representation"/>), trained to convergence with
/// its L2 chosen on the validation split (<see cref="LinearProbe"/>). Fine-tuning from there is LP-FT (Kumar et al. 2022,
/// "Fine-tuning can distort pretrained features and underperform out-of-distribution", §4): a good head first, so the
/// early gradients do not tear the features to fit a random one.
/// </summary>
public static class HeadFit
{
    /// <summary>Fits the model's <c>head</c> and returns the line that reports it.</summary>
    /// <remarks>The probe is fitted over the classes present in the training split. A head output with no training item
    /// (a head wider than the task's classes) gets weight 0 and a bias 20 below the smallest fitted one: its
    /// probability is e⁻²⁰ of the least likely fitted class's at equal features, as if the head had never seen it.</remarks>
    public static string Apply(nn.Module<Tensor, Tensor> model, TaskData task, int batchSize, PrecisionPolicy precision)
    {
        var head = model.named_modules().FirstOrDefault(m => m.name == "head").module as Linear
                   ?? throw new ArgumentException($"model.head_init = \"linear-probe\" fits a Linear named 'head'; {model.GetType().Name} has none");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var scope = NewDisposeScope();
        var trainX = Representation.Features(model, task.Train.InOrder(batchSize), precision);
        var valX = Representation.Features(model, task.Validation.InOrder(batchSize), precision);
        var present = task.Train.Targets.unique().output.data<long>().ToArray();
        using var lookup = full(head.out_features, -1L, dtype: ScalarType.Int64);
        for (int i = 0; i < present.Length; i++) lookup[present[i]] = i;
        var trainY = lookup.index_select(0, task.Train.Targets);
        var valY = lookup.index_select(0, task.Validation.Targets);
        // A validation item of a class absent from training (−1 here) cannot be predicted by the probe: it counts as an error.
        using var fit = LinearProbe.Fit(trainX, trainY, valX, valY, present.Length);
        using (no_grad())
        {
            var weight = zeros(head.out_features, head.in_features);
            var bias = full(head.out_features, fit.Bias.min().item<float>() - 20f);
            using var rows = tensor(present);
            weight.index_copy_(0, rows, fit.Weight.to(ScalarType.Float32));
            bias.index_copy_(0, rows, fit.Bias.to(ScalarType.Float32));
            head.weight!.copy_(weight.to(head.weight.dtype));
            head.bias!.copy_(bias.to(head.bias.dtype));
        }
        // The probe reads the features as evaluation computes them: BatchNorm with its running statistics. Training with the
        // statistics updated normalises each batch by its own, which on data far from the pre-training data (grey
        // Fashion-MNIST for an ImageNet ResNet) are other features: the fitted head then starts worse than a random one
        // (README, the ResNet study: a first training loss of 6.9 against 0.28 with the statistics frozen).
        var batchNorm = model is ResNet { FreezeBatchNormStatistics: false }
            ? "; note: model.batch_norm = \"update\" normalises training batches by their own statistics, not the running ones this head was fitted on"
            : "";
        return $"head fitted as a linear probe on the starting features ({task.Train.Count} items, {present.Length} classes, " +
               $"{trainX.shape[1]} features): L2 {fit.L2:G2} chosen on validation accuracy {fit.ValidationAccuracy:F4} " +
               $"(training {fit.TrainAccuracy:F4}); {(fit.Converged ? "converged" : "NOT converged")} in {fit.Iterations} iterations ({clock.Elapsed.TotalSeconds:F1} s)" + batchNorm;
    }
}

/// <summary><c>model.head_init = "linear-probe"</c>: the head fitted to the starting body's features when a new run starts,
/// before anything reads the start (the probes, a study's random-initialisation baseline). The one observer that sets
/// weights: it is the last step of making the starting model, not an analysis; a resumed run has them already.</summary>
public sealed class HeadFitFactory : IRunObserverFactory
{
    public int Order => 0;
    public IRunObserver? Create(RunComponents run) => run.Config.Model.HeadInit == "linear-probe" ? new HeadFitObserver() : null;

    sealed class HeadFitObserver : IRunObserver
    {
        public void RunStarted(IRunLoop loop, bool resumed)
        {
            if (resumed) return;
            var run = loop.Run;
            loop.Message(HeadFit.Apply(run.Model, run.Tasks[0], run.Config.Data.EvalBatchSize, run.Precision));
        }
    }
}
