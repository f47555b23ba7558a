using Research.Abstractions;
namespace Research.Fixtures.Past;
[Plugin("past-constant", Summary = "fixture: built against contract 1.1")]
public sealed class PastConstant : ISchedule
{
    public double Multiplier(in ScheduleContext context) => 1.0;
}
