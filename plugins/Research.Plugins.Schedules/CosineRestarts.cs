using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="CosineRestarts"/>.</summary>
public sealed record CosineRestartsOptions : WarmupOptions
{
    /// <summary>L₀: updates in the first cycle after warmup (SGDR's T₀). Give this or cycles.</summary>
    [Option(Min = 0)]
    public long CycleSteps { get; init; }

    /// <summary>n: equal cycles that fill the decay phase T − W exactly, the last ending at T (Hugging Face's
    /// <c>num_cycles</c> of <c>cosine_with_restarts</c>). Give this or cycle_steps.</summary>
    [Option(Min = 0, Aliases = ["num_cycles"], AddedIn = "2.2")]
    public long Cycles { get; init; }

    /// <summary>Each cycle is this many times as long as the previous one (SGDR's T_mult).</summary>
    [Option(Min = 1)]
    public double CycleMult { get; init; } = 1.0;

    /// <summary>m: the multiplier the cosine of each cycle falls towards (η_min / η_max).</summary>
    [Option(Min = 0, Max = 1)]
    public double MinLrRatio { get; init; }

    public override IEnumerable<OptionError> Validate()
    {
        foreach (var error in base.Validate()) yield return error;
        if (CycleSteps == 0 && Cycles == 0) yield return new("cycle_steps", "with cycles = 0 sets no cycle: give the length of the first cycle (cycle_steps) or the number of equal cycles over the run (cycles)");
        else if (CycleSteps > 0 && Cycles > 0) yield return new("cycles", "and cycle_steps are both set: give one of them");
        else if (Cycles > 0 && CycleMult != 1.0) yield return new("cycle_mult", "must be 1 with cycles, whose cycles are equal (give cycle_steps for growing cycles)");
    }
}

/// <summary>
/// Cosine annealing with warm restarts (SGDR, Loshchilov &amp; Hutter 2017; PyTorch
/// <c>CosineAnnealingWarmRestarts</c>). After warmup, cycle i has L_i updates, L₀ = cycle_steps and
/// L_{i+1} = ⌊L_i · cycle_mult⌋ (whole updates, so every cycle starts on an update). With u = t − W at
/// position s of a cycle of length L: f(t) = m + (1 − m)·½(1 + cos(π s / L)). f is exactly 1 at the start
/// of each cycle, whatever T is.
/// With <c>cycles</c> = n instead, the decay phase holds n equal cycles: p = (t − W) / (T − W) and
/// f(t) = m + (1 − m)·½(1 + cos(π·frac(n·p))) for t &lt; T, m from T on. With m = 0 this is Hugging Face's
/// <c>get_cosine_with_hard_restarts_schedule_with_warmup</c>, computed in the same order so that cycle boundaries
/// fall on the same updates.
/// </summary>
[Plugin("cosine-restarts", Summary = "SGDR: cosine cycles that restart at the peak, each cycle_mult times longer",
    Aliases = ["cosine_with_restarts"])]
public sealed class CosineRestarts(CosineRestartsOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c)
    {
        if (options.Cycles > 0) return EqualCycles(c);
        var (position, length) = Cycle(Math.Max(0, c.Step - options.WarmupFor(c)));
        return Warmup.Apply(options.WarmupFor(c), c.Step, Annealing.Cosine(1.0, options.MinLrRatio, position / length));
    }

    double EqualCycles(in ScheduleContext c)
    {
        var w = options.WarmupFor(c);
        if (c.Step < w) return Warmup.Apply(w, c.Step, 1.0);
        var p = (double)(c.Step - w) / Math.Max(1, c.TotalSteps - w);
        return p >= 1.0 ? options.MinLrRatio : Annealing.Cosine(1.0, options.MinLrRatio, options.Cycles * p % 1.0);
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
