using Research.Abstractions;

namespace Research.Fixtures.Future;

[Plugin("future-constant", Summary = "fixture: built against contract 3.0", Aliases = ["future-flat"])]
public sealed class FutureConstant : ISchedule
{
    public double Multiplier(in ScheduleContext context) => 1.0;
}
