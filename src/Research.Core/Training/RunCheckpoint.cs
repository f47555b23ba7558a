using Research.Core.Checkpoints;
using Research.Core.Optim;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>The tensors of a run's checkpoint: the optimizer's fp32 master weights and moments, the frozen parameters and
/// buffers beside them, and every method's state (prefixed by its index, a metric's by its name; its values, JSON, in the state's
/// <see cref="CheckpointState.MethodValues"/> under the same key); the parameters methods added, with their moments; and
/// the plugins' pending requests.</summary>
static class RunCheckpoint
{
    /// <summary>Writes a checkpoint with <paramref name="state"/>; returns its folder.</summary>
    public static string Write(string checkpoints, string name, CheckpointState state, RunComponents run, Optimizer optimizer)
    {
        // Beside the optimizer's fp32 master weights: frozen parameters and buffers (BatchNorm's running statistics are
        // state a resumed or fine-tuned model needs, though no gradient moves them).
        var frozen = Frozen(run);
        var methodState = run.Methods.All.SelectMany((m, i) => m.StateDict().Select(kv => ($"{StatePrefix(m, i)}{kv.Key}", kv.Value)));
        // The plugins' requests not yet acted on are part of the state; what the callbacks do after it is not (a resume
        // calls AfterCheckpoint of its checkpoint again).
        // Parameters methods added (contract 3.0) are kept beside the methods' tensors and their moments beside the model's,
        // under added/…, so the model's weights stay a model's; a run that added none writes exactly what it wrote before.
        var added = run.Added;
        var path = Checkpoint.Write(checkpoints, name, state with
            {
                MethodValues = Values(run, state.Step), Requests = run.Methods.Signals.Snapshot(), Added = added.Describe(),
            },
            optimizer.NamedMaster().Concat(frozen), optimizer.NamedState().Concat(added.Moments()), methodState.Concat(added.Values()));
        run.Methods.Callbacks.AfterCheckpoint(name, path);
        return path;
    }

    /// <summary>Every plugin's values by its key (<see cref="ValuesKey"/>), those without any left out; null when none has any.</summary>
    static Dictionary<string, Dictionary<string, System.Text.Json.JsonElement>>? Values(RunComponents run, long step)
    {
        var values = new Dictionary<string, Dictionary<string, System.Text.Json.JsonElement>>(StringComparer.Ordinal);
        for (int i = 0; i < run.Methods.All.Count; i++)
            if (run.Methods.All[i].StateValues(step) is { Count: > 0 } mine)
                values[ValuesKey(run.Methods.All[i], i)] = new(mine, StringComparer.Ordinal);
        return values.Count > 0 ? values : null;
    }

    /// <summary>Loads a verified checkpoint's tensors into fresh components: the optimizer (and through it the model), the
    /// frozen parameters and buffers, the methods' states and the loss scaler.</summary>
    public static void Load(string dir, RunComponents run, Optimizer optimizer, CheckpointState s)
    {
        var weights = Checkpoint.Load(dir, Checkpoint.Model);
        var moments = Checkpoint.Load(dir, Checkpoint.Optimizer);
        var methods = Checkpoint.Load(dir, Checkpoint.Methods);
        try
        {
            // A manifest re-signed after a header was relabelled verifies: the dtypes are checked against what they load into.
            using (NewDisposeScope())
            {
                WeightFile.CheckDTypes(Path.Combine(dir, Checkpoint.Model), weights, optimizer.NamedMaster().Concat(Frozen(run)));
                WeightFile.CheckDTypes(Path.Combine(dir, Checkpoint.Optimizer), moments, optimizer.NamedState());
            }
            optimizer.Restore(weights, moments, s.OptimizerStep);
            run.Added.Restore(s.Added, methods, moments);
            RestoreFrozen(run, weights);
            // Each plugin's tensors become the plugin's (GuardedMethod frees what it does not keep).
            for (int i = 0; i < run.Methods.All.Count; i++)
            {
                var prefix = StatePrefix(run.Methods.All[i], i);
                var mine = methods.Where(kv => kv.Key.StartsWith(prefix)).ToList();
                foreach (var (key, _) in mine) methods.Remove(key);
                run.Methods.All[i].LoadStateDict(mine.ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value));
                run.Methods.All[i].LoadStateValues(s.MethodValues?.GetValueOrDefault(ValuesKey(run.Methods.All[i], i))
                    ?? new Dictionary<string, System.Text.Json.JsonElement>());
            }
            run.Precision.Scaler?.Restore(s.LossScale, s.ScalerGoodSteps, s.SkippedSteps);
            run.Methods.Signals.Restore(s.Requests);
        }
        finally
        {
            foreach (var t in weights.Values.Concat(moments.Values).Concat(methods.Values)) t.Dispose();
        }
    }

    /// <summary>Where a plugin's state is kept in the checkpoint: a method's under its index in the config's methods, a
    /// metric's (a metric that measures the model) under its name — the metrics are not part of a run's identity, so a
    /// resume may choose others, and none of them must be handed another's state.</summary>
    static string StatePrefix(GuardedMethod m, int index) =>
        m.Descriptor.Role == Plugins.PluginRole.ForgettingMetric ? $"metric:{m.Name}/" : $"{index}/";

    /// <summary>Where a plugin's plain values are kept in the checkpoint's state: as its tensors, without the slash.</summary>
    static string ValuesKey(GuardedMethod m, int index) => StatePrefix(m, index).TrimEnd('/');

    /// <summary>What a checkpoint's weights hold beside the optimizer's: frozen parameters and buffers.</summary>
    static IEnumerable<(string Name, Tensor Value)> Frozen(RunComponents run) =>
        run.Model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter))
            .Concat(run.Model.named_buffers());

    /// <summary>The frozen parameters and the buffers (BatchNorm running statistics and counts), which the optimizer
    /// does not hold: a resume restores them from the checkpoint's weights.</summary>
    static void RestoreFrozen(RunComponents run, IReadOnlyDictionary<string, Tensor> weights)
    {
        using var _ = no_grad();
        foreach (var (name, p) in run.Model.named_parameters().Where(p => !p.parameter.requires_grad))
            if (weights.TryGetValue(name, out var w)) p.copy_(w);
        foreach (var (name, b) in run.Model.named_buffers())
            if (weights.TryGetValue(name, out var w)) b.copy_(w);
    }
}
