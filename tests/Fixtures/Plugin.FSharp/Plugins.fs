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

/// A penalty that fails at a chosen step, to test that a run stops cleanly and is recorded as failed.
[<Plugin("fs-throws", Summary = "F# fixture: throws from Penalty at step at_step")>]
type Throws(options: ThrowsOptions) =
    interface IPenalty with
        member _.Penalty(context) =
            if context.Step >= options.AtStep then invalidOp (sprintf "fixture failure at step %d" context.Step)
            null

/// Keeps Σ_t Δθ_t, the sum of every update, by parameter — in plain fields, replaced by a new tensor at every step, with no
/// dispose-scope call: the host keeps what StateDict returns and frees the rest. Σ_t Δθ_t = θ_T − θ_0 is the identity
/// a test checks against the study's weights.
[<Plugin("fs-delta-sum", Summary = "F# fixture: the sum of the updates, kept without dispose scopes")>]
type DeltaSum() =
    let mutable sums : Map<string, TorchSharp.torch.Tensor> = Map.empty
    interface IStepObserver with
        member _.AfterStep(context) =
            for p, delta in Seq.zip context.Parameters context.Deltas do
                sums <- sums.Add(p.Name, (match sums.TryFind p.Name with
                                          | Some s -> s.add(delta)
                                          | None -> delta.clone()))
    interface IStateful with
        member _.StateDict() = sums |> Seq.map (fun kv -> System.Collections.Generic.KeyValuePair("sum/" + kv.Key, kv.Value)) |> System.Collections.Generic.Dictionary :> _
        member _.LoadStateDict(state) =
            sums <- state |> Seq.map (fun kv -> kv.Key.Substring 4, kv.Value) |> Map.ofSeq

/// Records what the loop hands a method: per task, the smallest and largest micro-batch (items, memory included), the
/// micro-batches seen, and whether its task end was flagged as the last — as a probe row "fs_batches" at each task end,
/// [min rows; max rows; micro-batches; is last task (0/1)]. State in plain fields (counts are rebuilt per task).
[<Plugin("fs-batch-probe", Summary = "F# fixture: probes the micro-batch sizes a loss term sees")>]
type BatchProbe() =
    let mutable smallest = System.Int64.MaxValue
    let mutable largest = 0L
    let mutable count = 0L
    interface ILossTerm with
        member _.Loss(context) =
            smallest <- min smallest context.Batch.Size
            largest <- max largest context.Batch.Size
            count <- count + 1L
            null
    interface ITaskHooks with
        member _.TaskEnd(context) =
            context.AddProbe.Invoke("fs_batches", [| float smallest; float largest; float count; (if context.IsLastTask then 1.0 else 0.0) |])
            smallest <- System.Int64.MaxValue
            largest <- 0L
            count <- 0L

[<CLIMutable>]
type BadPenaltyOptions = { Kind: string }

/// A penalty of the wrong kind, as a buggy plugin would return: "nan" (a NaN scalar), "int" (an integer scalar) or
/// "vector" (a [3] tensor). The run must fail naming the plugin, not diverge or crash in autograd.
[<Plugin("fs-bad-penalty", Summary = "F# fixture: returns a NaN, integer or vector penalty")>]
type BadPenalty(options: BadPenaltyOptions) =
    interface IPenalty with
        member _.Penalty(context) =
            let theta = context.Parameters[0].Value
            match options.Kind with
            | "int" -> TorchSharp.torch.tensor 3L
            | "vector" -> theta.sum().mul(TorchSharp.torch.ones([| 3L |]))
            | _ -> theta.sum().mul(TorchSharp.torch.tensor nan)
