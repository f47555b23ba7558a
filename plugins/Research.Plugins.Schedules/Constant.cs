using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>f(t) = warmup(t) · 1.</summary>
[Plugin("constant", Summary = "constant peak learning rate after linear warmup", Aliases = ["constant_with_warmup"])]
public sealed class Constant(WarmupOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c) => Warmup.Apply(options.WarmupFor(c), c.Step, 1.0);
}
