namespace ResearchPlugin1

open System.Collections.Generic
open Research.Abstractions
open TorchSharp

/// <summary>The plugin's options, bound from its table in a config:
/// <code>[[methods]]
/// name = "research-plugin-1"
/// strength = 0.1</code>
/// A class with settable properties (not a record), so an option left out keeps its default.</summary>
type Options() =
    /// α in R(θ) = α/2 ‖θ − θ_s‖². Declared once: the host refuses other values, naming the key and the file.
    [<Option(Min = 0.0)>]
    member val Strength = 0.01 with get, set

/// <summary>
/// A penalty toward the weights at the start of the current task: R(θ) = α/2 Σ ‖θ − θ_s‖², added to the task loss.
/// Three roles: IPenalty gives the term at each step, ITaskHooks takes the anchor when a task starts, and IStateful
/// keeps the anchor in checkpoints, so a resumed run continues with the same one.
/// </summary>
[<Plugin("research-plugin-1", Summary = "α/2 ‖θ − θ at the start of the task‖²")>]
type Plugin(options: Options) =
    // The host keeps the tensors StateDict returns alive across steps and frees the ones dropped from it.
    let mutable anchor = Dictionary<string, torch.Tensor>()

    new() = Plugin(Options())

    interface ITaskHooks with
        member _.TaskStart(context) =
            use _ = torch.no_grad()
            anchor <- Dictionary()
            for p in context.Parameters do
                anchor[p.Name] <- p.Value.detach().``to``(torch.ScalarType.Float32).clone()

    interface IPenalty with
        member _.Penalty(context) =
            if anchor.Count = 0 || options.Strength = 0.0 then null
            else
                context.Parameters
                |> Seq.map (fun p -> (p.Value - anchor[p.Name]).square().sum())
                |> Seq.reduce (fun a b -> a + b)
                |> fun sum -> sum.mul(Scalar.op_Implicit(options.Strength / 2.0))

    interface IStateful with
        member _.StateDict() = anchor :> IReadOnlyDictionary<_, _>
        member _.LoadStateDict(state) = anchor <- Dictionary(state)
