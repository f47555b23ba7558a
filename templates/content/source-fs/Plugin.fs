namespace ResearchPlugin1

open System
open System.Collections.Generic
open Research.Abstractions
open TorchSharp

/// <summary>The source's keys of [data], beside the core's (classes, batch_size, validation_fraction, …):
/// <code>[data]
/// dataset = "research-plugin-1"
/// ring_items = 2000
/// ring_classes = 4</code>
/// A class with settable properties (not a record), so a key left out keeps its default.</summary>
type Options() =
    /// Training items (the test split has a quarter as many).
    [<Option(Min = 8.0, Max = 10_000_000.0)>]
    member val RingItems = 1000 with get, set

    /// Classes: class k is the ring k ≤ C·‖x‖ &lt; k + 1 of the unit disc.
    [<Option(Min = 2.0, Max = 64.0)>]
    member val RingClasses = 4 with get, set

    /// Noise features appended to the two coordinates (standard deviation 0.1).
    [<Option(Min = 0.0, Max = 1024.0)>]
    member val RingNoise = 2 with get, set

/// <summary>
/// A data source: points of the unit disc labelled by their ring. It says what its items are without loading them (Shape)
/// and loads its splits as named tensors (Load): input [N, D] float32 and targets [N] int64. The core does the rest — the
/// class filter, the training limit, the seeded validation holdout, batching, a study's tasks, replay. Every draw comes
/// from the request's named stream, so every process of a run, and a resumed run, sees the same items.
/// </summary>
type Plugin() =
    inherit DataSource<Options>()
    override _.Name = "research-plugin-1"
    override _.Summary = "points of the unit disc labelled by their ring"
    override _.Streams = [| "research-plugin-1" |] :> IReadOnlyList<string>

    override this.Shape(request) =
        let o = request.Options :?> Options
        DataShape(this.Name, InputKind.Vectors, int64 (2 + o.RingNoise), o.RingClasses)

    /// Rules between this source's keys and the core's, checked when the config is read.
    override _.Validate(data: DataKeys, o: Options) : IEnumerable<OptionError> =
        seq {
            if data.Classes |> Seq.exists (fun c -> c >= o.RingClasses) then
                yield OptionError("data.classes", sprintf "names a class beyond the %d rings (ring_classes)" o.RingClasses)
        }

    override _.Load(request) =
        let o = request.Options :?> Options
        use g = request.Stream.Invoke "research-plugin-1"
        let draw (n: int) =
            // r = √u is uniform over the disc's area; the ring is ⌊C·r⌋.
            let r = torch.rand([| int64 n |], generator = g).sqrt()
            let angle = torch.rand([| int64 n |], generator = g).mul(torch.tensor(2.0 * Math.PI))
            let noise = torch.randn([| int64 n; int64 o.RingNoise |], generator = g).mul(torch.tensor 0.1)
            let x = torch.cat([| torch.stack([| r.mul(angle.cos()); r.mul(angle.sin()) |], 1L); noise |], 1L)
            let y = r.mul(torch.tensor(float o.RingClasses)).floor().clamp_max((float (o.RingClasses - 1)).ToScalar()).to_type(torch.int64)
            Batch(x, y)
        // The splits become the core's when Load returns: it frees them.
        DataSplits(draw o.RingItems, draw (o.RingItems / 4))
