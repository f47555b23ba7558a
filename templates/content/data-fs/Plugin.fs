namespace ResearchPlugin1

open System
open System.Collections.Generic
open Research.Abstractions
open TorchSharp

/// <summary>The plugin's options, bound from its table in a config:
/// <code>[[methods]]
/// name = "research-plugin-1"
/// items_per_task = 200
/// mix_ratio = 0.25</code>
/// A class with settable properties (not a record), so an option left out keeps its default.</summary>
type Options() =
    /// Items of each task the memory keeps: the first ones its training sees.
    [<Option(Min = 1.0, Max = 10_000_000.0)>]
    member val ItemsPerTask = 100 with get, set

    /// r: memory items appended per current-task item in each micro-batch.
    [<Option(Min = 0.0, Max = 100.0)>]
    member val MixRatio = 0.25 with get, set

/// <summary>
/// A data role: a memory of the first items_per_task items of every task, of which round(r·B) are appended to each
/// micro-batch of B items of later tasks (the core mixes them in and normalises the loss over both). It sees every
/// training micro-batch (Observe), draws from the memory when the core asks (Sample), and keeps the memory in
/// checkpoints (IStateful) so a resumed run replays the same items.
/// </summary>
[<Plugin("research-plugin-1", Summary = "replays the first items of each earlier task")>]
type Plugin(options: Options) =
    // memory[t]: task t's items as a batch of the same named tensors as the task's batches. The host keeps the tensors
    // StateDict returns alive across steps and frees the ones dropped from it.
    let memory = List<Batch option>()
    let mutable task = 0

    /// Only earlier tasks are replayed: the current task trains on its own data.
    let past () = memory |> Seq.truncate task |> Seq.choose id |> List.ofSeq

    new() = Plugin(Options())

    interface IDataRole with
        member _.MixRatio = options.MixRatio
        member _.Count = past () |> List.sumBy (fun b -> b.Size)

        member _.Observe(batch, taskIndex, _random) =
            task <- taskIndex
            while memory.Count <= taskIndex do memory.Add None
            let stored = memory[taskIndex] |> Option.map (fun b -> b.Size) |> Option.defaultValue 0L
            let take = min (int64 options.ItemsPerTask - stored) batch.Size
            if take > 0L then
                use _ = torch.no_grad()
                let part = Batch(batch.Narrow(0L, take) |> Seq.map (fun kv -> KeyValuePair(kv.Key, kv.Value.detach().clone())))
                memory[taskIndex] <- Some(match memory[taskIndex] with
                                          | Some old -> Batch.Concat [| old; part |]
                                          | None -> part)

        member _.Sample(items, random) =
            let all =
                match past () with
                | [] -> invalidOp "the memory holds no item of an earlier task"
                | [ one ] -> one
                | several -> Batch.Concat(Array.ofList several)
            let n = min (int64 items) all.Size
            // Without replacement, drawn with the core's generator: the same items after a resume.
            all.Select(torch.randperm(all.Size, generator = random).narrow(0L, 0L, n))

    interface IStateful with
        member _.StateDict() =
            let state = Dictionary<string, torch.Tensor>()
            memory |> Seq.iteri (fun t batch ->
                batch |> Option.iter (fun b -> for kv in b do state[$"{t}/{kv.Key}"] <- kv.Value))
            state :> IReadOnlyDictionary<_, _>

        member _.LoadStateDict(state) =
            memory.Clear()
            for group in state |> Seq.groupBy (fun kv -> int (kv.Key.Substring(0, kv.Key.IndexOf '/'))) |> Seq.sortBy fst do
                let t, entries = group
                while memory.Count <= t do memory.Add None
                memory[t] <- Some(Batch(entries |> Seq.map (fun kv -> KeyValuePair(kv.Key.Substring(kv.Key.IndexOf '/' + 1), kv.Value))))
            // The task the run resumes in has begun filling its memory; Observe sets it again with the next batch.
            task <- max 0 (memory.Count - 1)
