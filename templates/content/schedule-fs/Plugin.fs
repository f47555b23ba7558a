namespace ResearchPlugin1

open Research.Abstractions

/// <summary>The plugin's options, bound from its table in a config:
/// <code>[schedule]
/// name = "research-plugin-1"
/// warmup_steps = 10
/// halve_every = 50</code>
/// A class with settable properties (not a record), so an option left out keeps its default.</summary>
type Options() =
    /// W: updates of linear warmup from 0 to the peak.
    [<Option(Min = 0.0)>]
    member val WarmupSteps = 0L with get, set

    /// The rate halves every this many updates after warmup.
    [<Option(Min = 1.0)>]
    member val HalveEvery = 100L with get, set

    /// Rules between options; each option's own range is declared on it.
    interface IValidatable with
        member this.Validate() =
            seq {
                if this.WarmupSteps > 0L && this.HalveEvery < this.WarmupSteps / 10L then
                    OptionError("halve_every", "is under a tenth of warmup_steps: the rate would collapse right after warmup")
            }

/// <summary>
/// Linear warmup, then halving: f(t) = t / W for t &lt; W, then 2^(−⌊(t − W) / h⌋). A schedule is a pure function of a
/// read-only context (the step t, the run's total updates T, the evaluations so far), so a resumed run needs no state.
/// </summary>
[<Plugin("research-plugin-1", Summary = "linear warmup, then the rate halves every halve_every updates")>]
type Plugin(options: Options) =
    new() = Plugin(Options())

    interface ISchedule with
        member _.Multiplier(context: inref<ScheduleContext>) =
            if context.Step < options.WarmupSteps then float context.Step / float options.WarmupSteps
            else 0.5 ** float ((context.Step - options.WarmupSteps) / options.HalveEvery)
