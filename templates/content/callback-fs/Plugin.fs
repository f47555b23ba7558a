namespace ResearchPlugin1

open System.Collections.Generic
open System.Text.Json
open Research.Abstractions
open TorchSharp

/// <summary>The plugin's options, bound from its table in a config:
/// <code>[[callbacks]]
/// name = "research-plugin-1"
/// stop_after_steps = 100</code>
/// A class with settable properties (not a record), so an option left out keeps its default.</summary>
type Options() =
    /// Asks the run to stop once it has taken this many steps (a study: counted across its tasks); 0 never stops.
    [<Option(Min = 0.0)>]
    member val StopAfterSteps = 0L with get, set

/// <summary>
/// A callback: logs <c>mean_loss</c>, the mean of every step's loss so far, at each step (the store's key
/// <c>plugin/research-plugin-1/mean_loss</c>, in TensorBoard and <c>research runs show</c>), and asks the run to stop after
/// <c>stop_after_steps</c> steps. The loss is the one the backward pass sees: the task loss with the loss terms, without
/// the penalties (a step's penalties are added after its micro-batches).
/// The count and the sum are state values (IStateful.StateValues), so a run resumed from a checkpoint logs exactly what
/// the uninterrupted run logged and stops at the same step: a count kept in a plain field alone would restart from 0.
/// </summary>
[<Plugin("research-plugin-1", Summary = "logs the running mean of the loss; stops after stop_after_steps steps")>]
type Plugin(options: Options) =
    let mutable steps = 0L   // steps begun
    let mutable total = 0.0  // Σ of their losses so far

    new() = Plugin(Options())

    interface ICallback with
        member _.BeforeForward(context) =
            // A step may read several micro-batches (gradient accumulation): its first one begins it.
            if context.MicroBatch = 0 then
                steps <- steps + 1L
                // Acted on at the boundary after this step, so the run ends with exactly StopAfterSteps steps.
                if steps = options.StopAfterSteps then
                    context.Control.RequestStop(sprintf "%d steps taken (stop_after_steps)" steps)

        member _.AfterBackward(context) =
            // Each micro-batch's part is Σᵢℓᵢ/N of the window, so the parts add up to the step's loss; a name logged twice
            // in a step keeps its last value, which is the one after the step's last micro-batch.
            total <- total + context.Loss
            context.Log.Scalar("mean_loss", total / float steps)

    interface IStateful with
        // No tensors: the state is two numbers, kept as values below.
        member _.StateDict() = Dictionary<string, torch.Tensor>() :> IReadOnlyDictionary<_, _>
        member _.LoadStateDict(_) = ()
        // A double is stored in its shortest round-trip form: the resumed sum has the same bits.
        member _.StateValues() = readOnlyDict [ "steps", box steps; "total", box total ]
        member _.LoadStateValues(values) =
            // Empty for a checkpoint written before this plugin kept values: start from 0 as a new run does.
            let read name (get: JsonElement -> 'T) (zero: 'T) = match values.TryGetValue name with | true, v -> get v | _ -> zero
            steps <- read "steps" (fun v -> v.GetInt64()) 0L
            total <- read "total" (fun v -> v.GetDouble()) 0.0
