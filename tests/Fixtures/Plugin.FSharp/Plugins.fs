namespace Research.Fixtures.FSharp

open Research.Abstractions

/// Options of "fs-step-down": F# option records need [<CLIMutable>] to be bound from TOML.
[<CLIMutable>]
type StepDownOptions = { Factor: float; At: int64 }

/// f(t) = 1 before step `at`, `factor` from then on.
[<Plugin("fs-step-down", Summary = "F# fixture: drops to factor at step `at`")>]
type StepDown(options: StepDownOptions) =
    interface ISchedule with
        member _.Multiplier(context: inref<ScheduleContext>) =
            if context.Step < options.At then 1.0 else options.Factor

[<CLIMutable>]
type ThrowsOptions = { AtStep: int64 }

/// A regularizer that fails at a chosen step, to test that a run stops cleanly and is recorded as failed.
[<Plugin("fs-throws", Summary = "F# fixture: throws from Penalty at step at_step")>]
type Throws(options: ThrowsOptions) =
    interface IRegularizer with
        member _.Penalty(context) =
            if context.Step >= options.AtStep then invalidOp (sprintf "fixture failure at step %d" context.Step)
            null
