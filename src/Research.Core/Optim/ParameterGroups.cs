using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace Research.Core.Optim;

/// <summary>The hyper-parameters a parameter group carries: a learning-rate multiplier and a weight decay λ.</summary>
public sealed record ParameterGroup(string Name, double LrMultiplier, double WeightDecay);

/// <summary>
/// A rule assigning parameters to a group: the first rule whose predicate holds over (name, tensor) wins.
/// Groups are data, as in nanoGPT's <c>configure_optimizers</c>: the default is "rank ≥ 2 decays" —
/// matrices and embeddings decay, biases and normalisation gains do not.
/// </summary>
public sealed record GroupRule(ParameterGroup Group, Func<string, Tensor, bool> Matches)
{
    public static GroupRule ByRank(ParameterGroup group, int minRank) => new(group, (_, t) => t.dim() >= minRank);
    public static GroupRule ByName(ParameterGroup group, string pattern) => new(group, (n, _) => Regex.IsMatch(n, pattern));

    /// <summary>decay (rank ≥ 2, λ) and no_decay (everything else, λ = 0).</summary>
    public static IReadOnlyList<GroupRule> DecayByRank(double weightDecay) =>
    [
        ByRank(new ParameterGroup("decay", 1.0, weightDecay), 2),
        new(new ParameterGroup("no_decay", 1.0, 0.0), (_, _) => true),
    ];
}

/// <summary>A parameter as the optimizer sees it: its name, tensor and group.</summary>
public sealed record OptimParameter(string Name, Tensor Value, ParameterGroup Group);

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

    /// <summary>Rows (group, tensors, parameters, lr multiplier, weight decay) for the table printed at start.</summary>
    public static IEnumerable<(ParameterGroup Group, int Tensors, long Parameters)> Summary(IReadOnlyList<OptimParameter> ps) =>
        ps.GroupBy(p => p.Group).Select(g => (g.Key, g.Count(), g.Sum(p => p.Value.numel())));
}
