using static TorchSharp.torch;

namespace Research.Abstractions;

// Structure (contract 3.0): parameters a method adds to a run (a head per task, kept by the core beside the model), the
// optimizer's state read by name, and how a gradient hook masks an update. The members are init properties of the
// contexts in Methods.cs; this file holds what they share.
//
// Adding a head at a task's start, in ITaskHooks.TaskStart:
//     var head = context.AddParameters([new("aux.task1.weight", w0), new("aux.task1.bias", b0)]);
// and using it in any later call of any role, by name:
//     var w = context.AddedParameters["aux.task1.weight"];   // LossTermContext, PenaltyContext, GradientContext, ...
// The core owns added parameters: it trains them (the run's optimizer, learning rate and schedule), clips them with the
// model's gradient, checkpoints them (values and moments) and hands them back in every context; a plugin never keeps
// them in its own state.

/// <summary>The names of the optimizer's per-parameter state (<c>OptimizerState(parameter, slot)</c> on the contexts).</summary>
public static class OptimizerSlots
{
    /// <summary>Adam's and AdamW's first moment m (PyTorch's <c>exp_avg</c>).</summary>
    public const string ExpAvg = "exp_avg";
    /// <summary>Adam's and AdamW's second moment v (PyTorch's <c>exp_avg_sq</c>).</summary>
    public const string ExpAvgSq = "exp_avg_sq";
    /// <summary>SGD's momentum buffer b (PyTorch's <c>momentum_buffer</c>; only with momentum &gt; 0).</summary>
    public const string Momentum = "momentum";
}

/// <summary>The defaults the contexts' structure members have outside a run (a test of a plugin, a benchmark).</summary>
public static class Structure
{
    /// <summary>No added parameters: what <c>AddedParameters</c> holds outside a run, or before a method added any.</summary>
    public static IReadOnlyDictionary<string, Tensor> NoParameters { get; } = new Dictionary<string, Tensor>();

    /// <summary>No optimizer: <c>OptimizerState</c> outside a run returns null for every parameter and slot.</summary>
    public static Func<string, string, Tensor?> NoOptimizerState { get; } = (_, _) => null;

    /// <summary>
    /// <c>AddParameters</c> outside a run: the values as new fp32 leaves with <c>requires_grad</c>, which nothing trains or
    /// keeps (a plugin's own test can call its task start and use what it gets).
    /// </summary>
    public static Func<IReadOnlyList<NamedParameter>, IReadOnlyList<NamedParameter>> Untrained { get; } = initial =>
        initial.Select(p => new NamedParameter(p.Name, p.Value.detach().to(ScalarType.Float32).clone().requires_grad_(true))).ToList();
}
