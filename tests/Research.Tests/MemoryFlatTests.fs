/// Native memory stays flat: the real trainer (Trainer.Run: synthetic data, a plugin schedule, the SQLite store, and at
/// every epoch end evaluation on validation and test plus the default epoch-end and best checkpoints) runs 1,000
/// optimizer steps, and the number of live native tensors is the same at step 100 and at step 1,000.
module Research.Tests.MemoryFlatTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Training
open Research.Tests.TestSupport

/// The counter: TorchSharp's per-thread statistics, tensors created on this thread minus tensors disposed on this
/// thread (`DisposeScopeManager.Statistics.ThreadTotalLiveCount`; every managed Tensor holds one native at::Tensor
/// handle until disposed — parameters, gradient views, flat buffers, moments, data and batches included).
/// Why not the process-wide `torch.Tensor.TotalCount`:
/// - Expecto runs other tests in parallel in this process, and they create and free tensors at any moment; the
///   per-thread count sees only this test's thread. Trainer.Run is synchronous, so the whole run (every tensor it
///   creates and disposes) happens on the thread that calls it, and no other test runs on that thread meanwhile.
///   So the test needs no `testSequenced`.
/// - A tensor that is never disposed but dropped is eventually disposed by its finalizer, which decrements
///   TotalCount: a leak could then look flat or not depending on when the GC runs. The finalizer runs on the
///   finalizer thread and is counted there, so on this thread the leaked tensor stays live forever: the per-thread
///   count sees every tensor not disposed deterministically, whatever the GC does.
let liveTensors () = DisposeScopeManager.Statistics.ThreadTotalLiveCount

/// Records the live-tensor count (relative to <paramref name="baseline"/>) when the trainer reports one of
/// <paramref name="steps"/>. The trainer reports a step between two windows: the step's own dispose scope has ended
/// and the current window's batches (inputs and targets of each micro-batch) are alive, so the two steps compared
/// must come from windows of as many micro-batches (the last window of an epoch may hold fewer).
/// <paramref name="duringStep"/> runs at every reported step (the negative control leaks from there).
type LiveCountObserver(baseline: int64, steps: int64 list, ?duringStep: int64 -> unit) =
    let counts = Dictionary<int64, int64>()
    let mutable reported = 0L
    member _.Reported = reported
    member _.CountAt step =
        match counts.TryGetValue step with
        | true, c -> c
        | _ -> failtestf "the trainer never reported step %d (it reported %d steps)" step reported
    interface ITrainingObserver with
        member _.Step(step, _, _, _, _) =
            reported <- reported + 1L
            duringStep |> Option.iter (fun f -> f step)
            if List.contains step steps then counts[step] <- liveTensors () - baseline

let private host = lazy (PluginHost.Load([]))

/// A tensor nobody disposes or references (the negative control's leak); the weak reference tells when it is collected.
[<Runtime.CompilerServices.MethodImpl(Runtime.CompilerServices.MethodImplOptions.NoInlining)>]
let private leakOne () = WeakReference(torch.zeros(4L))

/// The synthetic config of TestSupport (512 items → 461 train / 51 validation, batch 64 → ⌈461/64⌉ = 8 steps per
/// epoch, 2 epochs unless overridden), log_every = 1 so the observer hears of every step, and a linear warmup schedule
/// from the plugin host.
let private run (overrides: string list) (observer: ITrainingObserver) =
    let dir = tempDir "flat"
    let path = syntheticConfig dir "[schedule]\nname = \"linear\"\nwarmup_steps = 10\n"
    let config = ConfigLoader.Load(path, [ "train.log_every=1" ] @ overrides)
    Trainer.Run(config, host.Value, observer) |> ignore

/// Every tensor the run holds at step 100 — data (full train and test, train, validation and test splits: 10), model
/// parameters (4), flat value and gradient buffers (2), AdamW moments (2), the epoch's permutation (1) and the current
/// window's batch (2) — is 21 (measured; 25 in fp16 with a master copy and two micro-batches): a bound that a leak of
/// one tensor per step already breaks by step 100.
let private saneBound = 100L

let tests =
    testList "native memory" [
        test "native memory stays flat: the trainer runs 1,000 steps and the live native tensor count at step 1,000 equals that at step 100" {
            // 125 epochs × 8 steps = 1,000 steps. Step 100 is window 4 of epoch 13, step 1,000 the last (short,
            // 13 items) window of epoch 125, one micro-batch each; the 112 epoch ends between them each evaluate
            // and write a checkpoint.
            let baseline = liveTensors ()
            let observer = LiveCountObserver(baseline, [ 100L; 1000L ])
            run [ "train.epochs=125" ] observer
            Expect.equal observer.Reported 1000L "the run took exactly 1,000 optimizer steps"
            let at100, at1000 = observer.CountAt 100L, observer.CountAt 1000L
            Expect.equal (at1000 - at100) 0L
                (sprintf "live native tensors grew from %d at step 100 to %d at step 1,000: a leak of %.2f per step"
                    at100 at1000 (float (at1000 - at100) / 900.0))
            Expect.isGreaterThan at100 0L "the counter sees the run's tensors (parameters, buffers, data)"
            Expect.isLessThanOrEqual at100 saneBound (sprintf "live tensors at step 100: %d, above %d" at100 saneBound)
        }
        test "native memory stays flat with a master copy, loss scaling, accumulation and clipping: fp16, 2 micro-batches, clip_norm, 1,000 steps" {
            // 569 items → 57 validation, 512 train; batch 32 → 16 micro-batches, grad_accum 2 → 8 full windows per epoch,
            // 125 epochs = 1,000 steps. (With 15 micro-batches the last window would hold one, two tensors fewer.)
            // A fixed loss scale of 1024 (growth_interval beyond the run): scaled backward, unscaling, fp32 master
            // weights and gradient, every step applied.
            let baseline = liveTensors ()
            let observer = LiveCountObserver(baseline, [ 100L; 1000L ])
            run [ "train.epochs=125"; "data.synthetic_samples=569"; "data.batch_size=32"; "train.grad_accum=2"; "optimizer.clip_norm=1.0"
                  "precision.mode=\"fp16\""; "precision.initial_scale=1024.0"; "precision.growth_interval=1000000" ] observer
            Expect.equal observer.Reported 1000L "the run took exactly 1,000 optimizer steps"
            let at100, at1000 = observer.CountAt 100L, observer.CountAt 1000L
            Expect.equal (at1000 - at100) 0L (sprintf "live native tensors grew from %d at step 100 to %d at step 1,000" at100 at1000)
            Expect.isLessThanOrEqual at100 saneBound (sprintf "live tensors at step 100: %d, above %d" at100 saneBound)
        }
        test "a study whose plugins keep state stays flat within a task: EWC's penalty and a plugin replacing its tensors every step leave the live count at step 42 and step 62 of task 1 equal" {
            // 461 training items per task in batches of 64: 8 steps per epoch, 4 epochs, tasks of 32 steps; steps 42 and 62
            // are full windows of task 1, after task 0's consolidation, so EWC's penalty and fs-delta-sum's Σ Δθ (a new
            // tensor per parameter per step, the old one freed by the host) run at every step between them.
            let dir = tempDir "flat-study"
            let path = syntheticConfig dir "[study]\ntasks = 3\n[[methods]]\nname = \"ewc\"\n[[methods]]\nname = \"fs-delta-sum\"\n"
            let config = ConfigLoader.Load(path, [ "train.log_every=1"; "train.epochs=4" ])
            let observer = LiveCountObserver(liveTensors (), [ 42L; 62L ])
            let studyHost = PluginHost.Load([ fixtureDir "Plugin.FSharp" ])
            Trainer.Run(config, studyHost, observer, kind = RunKind.Study) |> ignore
            Expect.equal (observer.CountAt 62L - observer.CountAt 42L) 0L "no tensor left live per step"
        }
        test "every method role stays flat within a task: SI (penalty and step observer), LwF (loss term and shadow model), replay (memory mixed into batches) and A-GEM (reference gradients) leave the live count at step 42 and step 62 of task 1 equal" {
            let dir = tempDir "flat-methods"
            let methods =
                "[[methods]]\nname = \"si\"\n[[methods]]\nname = \"lwf\"\n[[methods]]\nname = \"replay\"\nbudget = 60\nmix_ratio = 0.5\n" +
                "[[methods]]\nname = \"a-gem\"\nreference_items = 32\n"
            let path = syntheticConfig dir ("[study]\ntasks = 3\n" + methods)
            let config = ConfigLoader.Load(path, [ "train.log_every=1"; "train.epochs=4" ])
            let observer = LiveCountObserver(liveTensors (), [ 42L; 62L ])
            Trainer.Run(config, PluginHost.Load([]), observer, kind = RunKind.Study) |> ignore
            Expect.equal (observer.CountAt 62L - observer.CountAt 42L) 0L "no tensor left live per step"
        }
        test "a run disposes every tensor it created: the live native tensor count after Trainer.Run (2 epochs) equals the count before" {
            let before = liveTensors ()
            run [] (LiveCountObserver(before, []))
            Expect.equal (liveTensors () - before) 0L "tensors the run left live (setup, checkpoints, evaluation)"
        }
        test "the counter catches a leak the GC hides: one dropped tensor per step, finalized at once, is still one more live tensor per step" {
            // The same 16-step run twice, with and without the leak, so only the leak's own tensors are counted.
            let growth (duringStep: int64 -> unit) =
                let observer = LiveCountObserver(liveTensors (), [ 4L; 16L ], duringStep)
                run [] observer
                observer.CountAt 16L - observer.CountAt 4L
            let finalized = ref 0
            let leak (_: int64) =
                // Created outside any dispose scope, never disposed, no reference kept: only its finalizer frees it,
                // here at once, on the finalizer thread (where TorchSharp counts the disposal, and where
                // torch.Tensor.TotalCount would be decremented: that counter would stay flat).
                let weak = leakOne ()
                GC.Collect()
                GC.WaitForPendingFinalizers()
                if not weak.IsAlive then finalized.Value <- finalized.Value + 1
            let clean, leaking = growth ignore, growth leak
            Expect.equal finalized.Value 16 "every leaked tensor was collected and finalized"
            Expect.equal (leaking - clean) 12L "12 leaked tensors between step 4 and step 16"
        }
    ]
