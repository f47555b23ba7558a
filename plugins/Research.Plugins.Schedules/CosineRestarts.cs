using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="CosineRestarts"/>.</summary>
public sealed record CosineRestartsOptions : WarmupOptions
{
    /// <summary>L₀: updates in the first cycle after warmup (SGDR's T₀). Required.</summary>
    [Option(Min = 1)]
    public long CycleSteps { get; init; }

    /// <summary>Each cycle is this many times as long as the previous one (SGDR's T_mult).</summary>
    [Option(Min = 1)]
    public double CycleMult { get; init; } = 1.0;

    /// <summary>m: the multiplier the cosine of each cycle falls towards (η_min / η_max).</summary>
    [Option(Min = 0, Max = 1)]
    public double MinLrRatio { get; init; }
}

/// <summary>
/// Cosine annealing with warm restarts (SGDR, Loshchilov &amp; Hutter 2017; PyTorch
/// <c>CosineAnnealingWarmRestarts</c>). After warmup, cycle i has L_i updates, L₀ = cycle_steps and
/// L_{i+1} = ⌊L_i · cycle_mult⌋ (whole updates, so every cycle starts on an update). With u = t − W at
/// position s of a cycle of length L: f(t) = m + (1 − m)·½(1 + cos(π s / L)). f is exactly 1 at the start
/// of each cycle, whatever T is.
/// </summary>
[Plugin("cosine-restarts", Summary = "SGDR: cosine cycles that restart at the peak, each cycle_mult times longer")]
public sealed class CosineRestarts(CosineRestartsOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c)
    {
        var (position, length) = Cycle(Math.Max(0, c.Step - options.WarmupFor(c)));
        return Warmup.Apply(options.WarmupFor(c), c.Step, Annealing.Cosine(1.0, options.MinLrRatio, position / length));
    }

    /// <summary>Position in the current cycle and that cycle's length, u updates after warmup. In doubles,
    /// which are exact for whole numbers below 2⁵³ and let a huge cycle_mult overflow to ∞ harmlessly.</summary>
    private (double Position, double Length) Cycle(long u)
    {
        double start = 0, length = options.CycleSteps;
        while (u - start >= length)
        {
            var next = Math.Floor(length * options.CycleMult);
            // Lengths that stop growing repeat forever: jump over all the remaining cycles at once.
            if (next == length) return ((u - start) % length, length);
            start += length;
            length = next;
        }
        return (u - start, length);
    }
}
