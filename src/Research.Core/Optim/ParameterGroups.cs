using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace Research.Core.Optim;

/// <summary>The hyper-parameters a parameter group carries: a multiplier of the base learning rate and a weight decay λ.</summary>
public sealed record ParameterGroup(string Name, double LrMultiplier, double WeightDecay);

/// <summary>A parameter as the optimizer sees it: its name, tensor and group.</summary>
public sealed record OptimParameter(string Name, Tensor Value, ParameterGroup Group);

/// <summary>
/// An explicit rule assigning parameters to a group: the first rule whose predicate holds over (name, tensor)
/// wins. <see cref="GroupPlan"/> composes rules from a config; this is the low-level form.
/// </summary>
public sealed record GroupRule(ParameterGroup Group, Func<string, Tensor, bool> Matches)
{
    /// <summary>decay (rank ≥ 2, λ) and no_decay (everything else, λ = 0).</summary>
    public static IReadOnlyList<GroupRule> DecayByRank(double weightDecay) =>
    [
        new(new ParameterGroup("decay", 1.0, weightDecay), (_, t) => t.dim() >= 2),
        new(new ParameterGroup("no_decay", 1.0, 0.0), (_, _) => true),
    ];
}

/// <summary>A model component chosen by a name pattern, with its own learning rate, or frozen.</summary>
/// <param name="Pattern">A .NET regular expression matched against parameter names (first component wins).</param>
/// <param name="LrMultiplier">The component's learning rate as a multiple of the base learning rate.</param>
/// <param name="Frozen">Its parameters get <c>requires_grad = false</c> and are left out of the optimizer.</param>
public sealed record ComponentRule(string Name, string Pattern, double LrMultiplier = 1.0, bool Frozen = false);

/// <summary>Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA; Bao et al. 2022, BEiT): a parameter at depth
/// d of D = L + 1 gets the multiplier factor^(D − d). Depth: 1 + the layer index captured by <paramref name="Pattern"/>;
/// parameters before the first layer (embeddings) are at depth 0, those after the last (final norm, head) at D.</summary>
public sealed record LayerDecay(double Factor, string Pattern);

/// <summary>
/// How parameters are grouped, as data: component rules (name pattern → lr multiplier, frozen) composed with the
/// decay rule (default: rank ≥ 2 decays, biases and norm gains do not) and optionally layer-wise decay. The
/// groups are the cross product: <c>{component}.decay</c>, <c>{component}.no_decay</c>
/// (<c>{component}.layer{d}.decay</c> … with layer decay). Parameters no component matches form the component
/// <c>other</c> at the base learning rate; without components, the groups are just <c>decay</c> and <c>no_decay</c>.
/// </summary>
public sealed record GroupPlan(double WeightDecay, IReadOnlyList<ComponentRule>? Components = null,
    IReadOnlyList<string>? NoDecayPatterns = null, LayerDecay? LayerDecay = null)
{
    /// <summary>
    /// The seed chapter's per-component learning rates for a vision-language model, relative to the language
    /// model's 2e-5: vision encoder 2e-6 (×0.1: pre-trained features change least), connector 2e-4 (×10: it is
    /// new), language model 2e-5 (×1). Parameters are named <c>vision_encoder.*</c>, <c>connector.*</c>, <c>language_model.*</c>.
    /// </summary>
    public static readonly IReadOnlyList<ComponentRule> VisionLanguage =
    [
        new("vision_encoder", @"^vision_encoder\.", 0.1),
        new("connector", @"^connector\.", 10.0),
        new("language_model", @"^language_model\.", 1.0),
    ];

    public bool Decays(string name, Tensor t) =>
        t.dim() >= 2 && !(NoDecayPatterns ?? []).Any(p => Regex.IsMatch(name, p));
}

public static class ParameterGroups
{
    /// <summary>Assigns each named parameter to the group of the first matching rule; a parameter that no rule
    /// matches is an error (a silent default would hide a typo in a pattern).</summary>
    public static IReadOnlyList<OptimParameter> Assign(IEnumerable<(string Name, Tensor Value)> parameters, IReadOnlyList<GroupRule> rules) =>
        parameters.Select(p =>
        {
            var rule = rules.FirstOrDefault(r => r.Matches(p.Name, p.Value))
                ?? throw new InvalidOperationException($"parameter '{p.Name}' matches no parameter-group rule");
            return new OptimParameter(p.Name, p.Value, rule.Group);
        }).ToList();

    /// <summary>
    /// Groups the named parameters by <paramref name="plan"/>. Frozen parameters get <c>requires_grad = false</c>
    /// and are returned apart; the trainable ones carry their group (one record per distinct group).
    /// </summary>
    public static (IReadOnlyList<OptimParameter> Trainable, IReadOnlyList<(string Name, Tensor Value)> Frozen) Build(
        IReadOnlyList<(string Name, Tensor Value)> parameters, GroupPlan plan)
    {
        var components = plan.Components ?? [];
        foreach (var c in components)
            if (!parameters.Any(p => Regex.IsMatch(p.Name, c.Pattern)))
                throw new InvalidOperationException($"component '{c.Name}': pattern '{c.Pattern}' matches no parameter");

        var depths = plan.LayerDecay is { } ld ? Depths(parameters, ld.Pattern) : null;
        int maxDepth = depths?.Values.Max() ?? 0;
        var groups = new Dictionary<string, ParameterGroup>();
        var trainable = new List<OptimParameter>();
        var frozen = new List<(string, Tensor)>();
        foreach (var (name, value) in parameters)
        {
            var component = components.FirstOrDefault(c => Regex.IsMatch(name, c.Pattern))
                            ?? (components.Count > 0 ? new ComponentRule("other", "", 1.0) : null);
            if (component is { Frozen: true })
            {
                value.requires_grad_(false);
                frozen.Add((name, value));
                continue;
            }
            var decays = plan.Decays(name, value);
            double multiplier = component?.LrMultiplier ?? 1.0;
            var key = component is null ? "" : component.Name + ".";
            if (depths != null)
            {
                multiplier *= Math.Pow(plan.LayerDecay!.Factor, maxDepth - depths[name]);
                key += $"layer{depths[name]}.";
            }
            key += decays ? "decay" : "no_decay";
            if (!groups.TryGetValue(key, out var group))
                groups[key] = group = new ParameterGroup(key, multiplier, decays ? plan.WeightDecay : 0.0);
            trainable.Add(new OptimParameter(name, value, group));
        }
        return (trainable, frozen);
    }

    static Dictionary<string, int> Depths(IReadOnlyList<(string Name, Tensor Value)> ps, string pattern)
    {
        var layer = ps.Select(p =>
        {
            var m = Regex.Match(p.Name, pattern);
            if (!m.Success) return -1;
            // The first group must capture the index: a pattern without a group, or whose group captures something else,
            // is a mistake in the pattern, not a parameter outside the layers.
            return m.Groups.Count > 1 && int.TryParse(m.Groups[1].Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var index)
                ? index
                : throw new InvalidOperationException($"layer decay: pattern '{pattern}' matches '{p.Name}' but its first group captures " +
                    (m.Groups.Count > 1 ? $"'{m.Groups[1].Value}', not a layer index" : "nothing (it has no group)"));
        }).ToList();
        if (layer.All(l => l < 0)) throw new InvalidOperationException($"layer decay: pattern '{pattern}' captures no layer index");
        int last = layer.Max(), firstIndexed = layer.FindIndex(l => l >= 0);
        return ps.Select((p, i) => (p.Name, Depth: layer[i] >= 0 ? layer[i] + 1 : i < firstIndexed ? 0 : last + 2))
            .ToDictionary(x => x.Name, x => x.Depth);
    }

    /// <summary>Rows (group, tensors, parameters) in buffer order, for the table printed at start.</summary>
    public static IEnumerable<(ParameterGroup Group, int Tensors, long Parameters)> Summary(IReadOnlyList<OptimParameter> ps) =>
        ps.GroupBy(p => p.Group).Select(g => (g.Key, g.Count(), g.Sum(p => p.Value.numel())));

    /// <summary>The group table as text lines: group, tensors, parameters, lr, weight decay; then total and trainable.</summary>
    public static IEnumerable<string> Table(IReadOnlyList<OptimParameter> trainable, IReadOnlyList<(string Name, Tensor Value)> frozen, double baseLr)
    {
        var rows = Summary(trainable).ToList();
        int width = Math.Max(5, rows.Select(r => r.Group.Name.Length).DefaultIfEmpty(0).Max());
        yield return $"{"group".PadRight(width)}  {"tensors",7}  {"parameters",12}  {"lr",10}  {"weight decay",12}";
        foreach (var (g, tensors, count) in rows)
            yield return $"{g.Name.PadRight(width)}  {tensors,7}  {count,12:N0}  {(baseLr * g.LrMultiplier).ToString("0.###e+00", System.Globalization.CultureInfo.InvariantCulture),10}  {g.WeightDecay,12:G3}";
        long trainableCount = rows.Sum(r => r.Parameters), frozenCount = frozen.Sum(f => f.Value.numel()), total = trainableCount + frozenCount;
        if (frozen.Count > 0) yield return $"{"frozen".PadRight(width)}  {frozen.Count,7}  {frozenCount,12:N0}";
        yield return $"parameters {total:N0}, trainable {trainableCount:N0} ({100.0 * trainableCount / Math.Max(1, total):F1}%)";
    }
}
