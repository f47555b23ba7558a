using Research.Abstractions;
using Research.Core.Optim;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>The methods' task starts (<see cref="ITaskHooks.TaskStart"/>), where a method may add parameters to the run.</summary>
static class TaskStart
{
    /// <summary>
    /// Calls every task hook in config order with θ at the task's start. Each method's <c>AddParameters</c> adds to the
    /// run's <see cref="RunComponents.Added"/> under its name, and only during its own call: parameters added later would
    /// miss a checkpoint's record of where they came from, and a resume (which does not call a task start again) would not
    /// make them.
    /// </summary>
    public static void Call(RunComponents run, int phase, Optimizer optimizer)
    {
        if (run.Methods.TaskHooks.Count == 0) return;
        using var scope = NewDisposeScope();
        var parameters = optimizer.PenaltyParameters();
        var added = run.Added;
        foreach (var m in run.Methods.TaskHooks)
        {
            bool open = true;
            var context = new TaskStartContext(phase, run.Tasks[phase].Name, parameters)
            {
                AddParameters = initial => open ? added.Add(m.Name, initial)
                    : throw new InvalidOperationException("AddParameters is called during ITaskHooks.TaskStart only"),
                AddedParameters = added.Parameters,
                OptimizerState = (p, slot) => OptimizerStates.Read(optimizer, added, p, slot),
            };
            try { m.TaskStart(context); }
            finally { open = false; }
        }
    }
}
