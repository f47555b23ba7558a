using Research.Abstractions;

namespace Research.Fixtures.Own;

[Plugin("own-constant", Summary = "fixture: carries its own Research.Abstractions")]
public sealed class OwnConstant : ISchedule
{
    public double Multiplier(in ScheduleContext context) => 1.0;
}
