using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public enum AnchorKind
{
    /// <summary>θ⁰: the weights at the first step of the run (the pre-trained weights when fine-tuning).</summary>
    Initial,
    /// <summary>The weights at the end of the previous task (no penalty during the first task).</summary>
    PreviousTask,
}

public sealed record L2SPOptions
{
    /// <summary>α in R(θ) = α/2 ‖θ − θ⁰‖², Li et al.'s α (the ½ inside).</summary>
    [Option(Min = 0)]
    public double Alpha { get; init; } = 0.01;
    /// <summary><c>initial</c> or <c>previous-task</c>.</summary>
    public AnchorKind Anchor { get; init; } = AnchorKind.Initial;
    /// <summary>A regular expression over parameter names: only the parameters it matches are pulled (a VLM's
    /// <c>^language_model\.</c>); empty: every parameter.</summary>
    [Option(Regex = true, AddedIn = "3.0")]
    public string Match { get; init; } = "";
}

/// <summary>
/// L2-SP (Li, Grandvalet &amp; Davoine 2018, "Explicit inductive bias for transfer learning"): R(θ) = α/2 ‖θ − θ⁰‖²,
/// gradient α(θ − θ⁰): it pulls toward the starting point (pre-trained weights), which weight decay does not.
/// With <c>anchor = "previous-task"</c> it is "L2 toward the previous weights", the EWC baseline with F = I (EWC's
/// λ = α there). Strength convention: α is the paper's α, the ½ inside as Li et al. write α/2‖w_S − w⁰_S‖². Their
/// β/2‖w_S̄‖² on the new head's weights is not here: every parameter, a new head's too, is anchored at its θ⁰. Avalanche
/// has no L2-SP.
/// </summary>
[Plugin("l2-sp", Summary = "L2 toward the starting or previous-task weights: α/2 ‖θ − θ⁰‖²")]
public sealed class L2SP(L2SPOptions options) : IPenalty, ITaskHooks, IStateful
{
    Dictionary<string, Tensor>? _anchor;
    readonly System.Text.RegularExpressions.Regex? _match = options.Match.Length > 0 ? new(options.Match) : null;

    /// <summary>The anchored parameters' detached copies: the penalty sums over the anchor's names only.</summary>
    Dictionary<string, Tensor> Snapshot(IReadOnlyList<NamedParameter> parameters) =>
        SquaredDistance.Snapshot(_match is null ? parameters : parameters.Where(p => _match.IsMatch(p.Name)).ToList());

    public Tensor? Penalty(PenaltyContext context)
    {
        if (_anchor is null && options.Anchor == AnchorKind.Initial) _anchor = Snapshot(context.Parameters);
        if (_anchor is null || options.Alpha == 0) return null;
        return SquaredDistance.Sum(context.Parameters, _anchor).mul(options.Alpha / 2);
    }

    public void TaskEnd(TaskEndContext context)
    {
        if (options.Anchor != AnchorKind.PreviousTask || context.IsLastTask) return;
        _anchor = Snapshot(context.Parameters);
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() =>
        _anchor?.ToDictionary(kv => $"anchor/{kv.Key}", kv => kv.Value) ?? new Dictionary<string, Tensor>();

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        if (state.Count == 0) return;
        _anchor = state.Where(kv => kv.Key.StartsWith("anchor/")).ToDictionary(kv => kv.Key["anchor/".Length..], kv => kv.Value);
    }
}
