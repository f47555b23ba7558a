namespace ResearchPlugin1

open System
open System.Collections.Generic
open Research.Abstractions
open TorchSharp

/// <summary>The kind's keys of [model], beside the keys every kind shares (outputs, init_from, strict, reinit):
/// <code>[model]
/// kind = "research-plugin-1"
/// width = 64</code>
/// A class with settable properties (not a record), so a key left out keeps its default.</summary>
[<ModelOptions("research-plugin-1")>]
type Options() =
    /// Width of each of the two hidden layers.
    [<Option(Min = 1.0, Max = 65_536.0)>]
    member val Width = 32 with get, set

/// features → body (Linear, tanh, Linear, tanh) → head (Linear). The head's input is the representation the probes read
/// (ModelKind.Representation: "head" by default).
type Network(features: int64, width: int64, outputs: int64) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("research-plugin-1")
    let body = torch.nn.Sequential(torch.nn.Linear(features, width), torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh())
    let head = torch.nn.Linear(width, outputs)
    do this.RegisterComponents()
    override _.forward x = head.call (body.call x)

/// <summary>
/// A model kind: its checks against the data, and a model made from a seeded generator. Loading and saving weights (by
/// parameter name), the head ("head"), the probes' representation (the head's input) and the memory shape (none) are the
/// defaults; override them for a published layout or a transformer.
/// </summary>
type Plugin() =
    inherit ModelKind<Options>()
    override _.Summary = "a two-layer tanh network with a linear head"

    override this.Check(o: Options, model: ModelKeys, data: DataShape) : IEnumerable<OptionError> =
        seq {
            if data.Input <> InputKind.Vectors && data.Input <> InputKind.Images then
                yield OptionError("model.kind", sprintf "\"%s\" reads feature vectors or flattened images, not %O of \"%s\"" this.Name data.Input data.Source)
        }

    override _.Create(o: Options, context: ModelContext, generator: torch.Generator) =
        let model = new Network(context.Target.Features, int64 o.Width, int64 context.Outputs)
        // Every value from the generator (the same model in every process of a run): U(−1/√fan_in, 1/√fan_in), the
        // default of nn.Linear, drawn in parameter order.
        use _ = torch.no_grad()
        let mutable fanIn = 1L
        for p in model.parameters() do
            if p.dim() = 2L then fanIn <- p.shape[1]
            let bound = 1.0 / Math.Sqrt(float fanIn)
            p.copy_(torch.rand(p.shape, generator = generator).mul(torch.tensor(2.0 * bound)).sub(torch.tensor bound)) |> ignore
        model :> torch.nn.Module<torch.Tensor, torch.Tensor>
