using Research.Abstractions;
using Research.Core.Precision;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>
/// The run's predictor (<see cref="IPredictor"/>) at one point of the run: how an evaluation turns a batch's rows into
/// predicted classes in place of the model's arg-max. Made per evaluation (the step and task are fixed while it lasts); a
/// run without a predictor has none, and its evaluation is the arg-max path unchanged.
/// </summary>
/// <param name="predictor">The guarded method that predicts.</param>
/// <param name="model">The model evaluated, whose representation the predictor may read.</param>
/// <param name="precision">The precision policy the model runs under (its input cast).</param>
/// <param name="module">The submodule whose input is the representation (<see cref="Models.ModelPlan.Representation"/>).</param>
/// <param name="step">Updates applied so far.</param>
/// <param name="task">The task the loop is in.</param>
public sealed class Prediction(GuardedMethod predictor, nn.Module<Tensor, Tensor> model, PrecisionPolicy? precision, string module, long step, int task)
{
    /// <summary>The run's predictor at (<paramref name="step"/>, <paramref name="task"/>), or null when no method predicts.</summary>
    public static Prediction? Of(RunComponents run, long step, int task) =>
        run.Methods.Predictor is { } p ? new Prediction(p, run.Model, run.Precision, run.ModelPlan.Representation, step, task) : null;

    /// <summary>The predictor for one batch: (rows [n, C], targets [n]) → predicted classes [n], in the caller's scope.</summary>
    public Func<Tensor, Tensor, Tensor> For(Batch batch) => (rows, targets) =>
        predictor.Predict(new PredictContext(step, task, batch, rows, targets, b => Features(b, rows.device)));

    /// <summary>The probes' features (<see cref="Models.RepresentationFeatures.Of"/>) of a batch, on the logits' device.</summary>
    Tensor Features(Batch b, Device device)
    {
        var features = Models.RepresentationFeatures.Of(model, [b], precision, module);
        return features.device == device ? features : features.to(device);
    }
}
