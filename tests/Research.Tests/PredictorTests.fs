/// The evaluation hook (IPredictor, contract 3.0) and iCaRL: herding and the nearest mean of exemplars against
/// independent float64 computations, a predictor's classes are the accuracy every record holds while the loss stays the
/// model's, at most one predictor per run, and an iCaRL study resumes bitwise.
module Research.Tests.PredictorTests

open System
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Checkpoints
open Research.Core.Tracking
open Research.Plugins.Methods
open Research.Tests.TestSupport

let private fixture = fixtureDir "Plugin.Predictor"

// ---- independent float64 references ----

/// x / max(‖x‖₂, 1e-12), as iCaRL normalises a feature vector.
let private normalised (x: float[]) =
    let n = max (sqrt (Array.sumBy (fun v -> v * v) x)) 1e-12
    x |> Array.map (fun v -> v / n)

let private squaredDistance (a: float[]) (b: float[]) = Array.fold2 (fun s x y -> s + (x - y) * (x - y)) 0.0 a b

/// iCaRL's Algorithm 4 as the paper writes it, one loop per sum: μ the mean of the rows, p_k the row not chosen yet
/// whose addition keeps the running mean nearest to μ (the first on a tie).
let private naiveHerding (rows: float[][]) (m: int) =
    let d = rows[0].Length
    let mu = Array.init d (fun j -> (rows |> Array.sumBy (fun r -> r[j])) / float rows.Length)
    let sum = Array.zeroCreate<float> d
    let chosen = Collections.Generic.List<int64>()
    for k in 1 .. min m rows.Length do
        let mutable best, bestDistance = -1, Double.PositiveInfinity
        for i in 0 .. rows.Length - 1 do
            if not (chosen.Contains(int64 i)) then
                let candidate = Array.init d (fun j -> (sum[j] + rows[i][j]) / float k)
                let dist = squaredDistance mu candidate
                if dist < bestDistance then best <- i; bestDistance <- dist
        chosen.Add(int64 best)
        for j in 0 .. d - 1 do sum[j] <- sum[j] + rows[best][j]
    chosen.ToArray()

let private tensorOf (rows: float[][]) =
    torch.tensor(Array.concat rows).reshape(int64 rows.Length, int64 rows[0].Length)

let private icarl (memory: int) = Icarl(IcarlOptions(Memory = memory))

/// A PredictContext whose representation of a batch is its input (so the test knows every feature).
let private predictContext (batch: Batch) (logits: torch.Tensor) =
    PredictContext(7L, 1, batch, logits, batch.TargetsTensor, Func<Batch, torch.Tensor>(fun b -> b[Batch.Input].clone()))

// ---- runs ----

/// 3 tasks of 2 classes each (split-class on 6 synthetic classes): 180 training items per task in micro-batches of 32 → 6
/// per epoch, 12 per task, 36 in all; a checkpoint every 4 steps.
let private studyConfig (dir: string) (methods: string) =
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "predictor"
seed = 5
threads = 1
output_dir = "%s"
[data]
dataset = "synthetic"
synthetic_samples = 600
synthetic_features = 8
synthetic_classes = 6
batch_size = 32
eval_batch_size = 50
[model]
hidden = [16]
[checkpoint]
every = 4
at_epoch_end = false
[train]
epochs = 2
log_every = 1
[study]
benchmark = "split-class"
tasks = 3
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) methods)
    path

let private runDirs (dir: string) = Directory.GetDirectories(Path.Combine(dir, "runs")) |> Array.sort

let private study (methods: string) =
    let dir = tempDir "predictor"
    let r = research dir [ "study"; studyConfig dir methods; "--plugins"; fixture ]
    if r.ExitCode <> 0 then failtestf "study failed: %s" r.Err
    Array.exactlyOne (runDirs dir)

let private rows (runDir: string) (sql: string) =
    use store = new RunStore(Path.Combine(runDir, RunStore.FileName))
    store.Query(sql) |> Seq.map (fun r -> r |> Array.map (fun v -> Convert.ToString(v, Globalization.CultureInfo.InvariantCulture))) |> List.ofSeq

let private matrix runDir = rows runDir "SELECT after_task, on_task, split, loss, accuracy FROM study_matrix ORDER BY after_task, on_task, split"
let private evaluations runDir = rows runDir "SELECT step, epoch, split, loss, accuracy FROM evaluations ORDER BY step, split, rowid"

let private finalWeights (runDir: string) =
    let d = TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(runDir, "checkpoints", "final", Checkpoint.Model))
    d |> Seq.sortBy (fun kv -> kv.Key) |> Seq.map (fun kv -> kv.Key, kv.Value.data<float32>().ToArray()) |> List.ofSeq

let private plain = lazy (study "")

let private method (name: string) (options: string) = sprintf "[[methods]]\nname = \"%s\"\n%s\n" name options

let tests =
    testList "predictor" [
        test "herding on four hand-made unit features picks them in the order worked out by hand: 2, 3, 0, 1" {
            // μ = (0.47, 0.69). k = 1: ‖μ − x‖² = 0.757, 0.317, 0.029, 0.109 → x2. k = 2: ‖μ − (x2 + x)/2‖² = 0.193, 0.073,
            // –, 0.037 → x3. k = 3: 0.035 (x0), 0.084 (x1) → x0; then x1.
            let rows = [| [| 1.0; 0.0 |]; [| 0.0; 1.0 |]; [| 0.6; 0.8 |]; [| 0.28; 0.96 |] |]
            use x = tensorOf rows
            Expect.equal (Herding.Select(x, 4)) [| 2L; 3L; 0L; 1L |] "the hand-worked order"
            Expect.equal (naiveHerding rows 4) [| 2L; 3L; 0L; 1L |] "the naive reference agrees with the hand"
            Expect.equal (Herding.Select(x, 2)) [| 2L; 3L |] "m < n: the first m of the same order (what a reduced exemplar set keeps)"
            Expect.equal (Herding.Select(x, 9)) [| 2L; 3L; 0L; 1L |] "m > n: every row once"
        }
        test "herding equals a naive float64 loop of iCaRL's Algorithm 4 on 40 random sets of normalised features" {
            let rng = Random(20261207)
            for _ in 1 .. 40 do
                let n, d = rng.Next(2, 40), rng.Next(1, 7)
                let rows = Array.init n (fun _ -> normalised (Array.init d (fun _ -> rng.NextDouble() * 2.0 - 1.0)))
                let m = rng.Next(1, n + 1)
                use x = tensorOf rows
                Expect.equal (Herding.Select(x, m)) (naiveHerding rows m) (sprintf "n = %d, d = %d, m = %d" n d m)
        }
        test "the nearest mean of exemplars predicts argmin_y ‖x/‖x‖ − μ_y‖ over the classes with exemplars, μ_y the renormalised mean of normalised exemplars (float64 reference)" {
            let rng = Random(7)
            let classes, d = 4, 5
            // Exemplars of classes 0, 1 and 3 (none of 2: it is never predicted), 4 each, features = the inputs.
            let exemplarClasses = [| 0L; 0L; 0L; 0L; 1L; 1L; 1L; 1L; 3L; 3L; 3L; 3L |]
            let exemplars = exemplarClasses |> Array.map (fun c -> Array.init d (fun j -> float32 (rng.NextDouble() + (if int64 j = c then 1.5 else 0.0))))
            let plugin = icarl 100
            let state = dict [
                "memory/input", torch.tensor(Array.concat exemplars).reshape(12L, int64 d)
                "memory/targets", torch.tensor(exemplarClasses)
                "memory_task", torch.zeros([| 12L |], dtype = torch.int64) ]
            (plugin :> IStateful).LoadStateDict(Collections.Generic.Dictionary(state))
            let items = Array.init 200 (fun _ -> Array.init d (fun _ -> float32 (rng.NextDouble() * 2.0 - 0.5)))
            let batch = Batch(torch.tensor(Array.concat items).reshape(200L, int64 d), torch.zeros([| 200L |], dtype = torch.int64))
            use logits = torch.zeros([| 200L; int64 classes |])
            let predicted = (plugin :> IPredictor).Predict(predictContext batch logits).data<int64>().ToArray()
            let f32 (x: float32[]) = x |> Array.map float
            let means =
                [ for c in [ 0L; 1L; 3L ] ->
                    let own = Array.zip exemplarClasses exemplars |> Array.filter (fun (k, _) -> k = c) |> Array.map (snd >> f32 >> normalised)
                    c, normalised (Array.init d (fun j -> (own |> Array.sumBy (fun r -> r[j])) / float own.Length)) ]
            let expected = items |> Array.map (fun x -> let fx = normalised (f32 x) in means |> List.minBy (fun (_, mu) -> squaredDistance fx mu) |> fst)
            Expect.equal predicted expected "every item's class is the float64 argmin"
            Expect.isFalse (predicted |> Array.contains 2L) "a class without exemplars is never predicted"
        }
        test "before any exemplar exists, iCaRL predicts the model's arg-max; with classifier = model always" {
            let batch = Batch(torch.rand([| 30L; 3L |]), torch.zeros([| 30L |], dtype = torch.int64))
            use logits = torch.randn([| 30L; 4L |])
            let argmax = logits.argmax(-1L).data<int64>().ToArray()
            Expect.equal ((icarl 10 :> IPredictor).Predict(predictContext batch logits).data<int64>().ToArray()) argmax "empty memory: arg-max"
            let model = Icarl(IcarlOptions(Classifier = IcarlClassifier.Model))
            (model :> IStateful).LoadStateDict(Collections.Generic.Dictionary(dict [
                "memory/input", torch.rand([| 4L; 3L |]); "memory/targets", torch.tensor([| 0L; 1L; 2L; 3L |]); "memory_task", torch.zeros([| 4L |], dtype = torch.int64) ]))
            Expect.equal ((model :> IPredictor).Predict(predictContext batch logits).data<int64>().ToArray()) argmax "classifier = model: arg-max"
        }
        test "iCaRL's distillation is α T² Σ over counted rows of KL(softmax(z_old,S/T) ‖ softmax(z_S/T)) on the classes S seen before (float64 reference, 1e-5 relative)" {
            let rng = Random(11)
            let n, classes, alpha, t = 6, 5, 0.7, 2.0
            let seen = [| 0L; 2L; 3L |]
            let draw () = Array.init n (fun _ -> Array.init classes (fun _ -> rng.NextDouble() * 4.0 - 2.0))
            let student, teacher = draw (), draw ()
            let targets = [| 0L; 1L; -100L; 3L; 4L; 2L |]
            let plugin = Icarl(IcarlOptions(Distillation = alpha, Temperature = t))
            (plugin :> IStateful).LoadStateDict(Collections.Generic.Dictionary(dict [
                "teacher/w", torch.zeros([| 1L |]); "seen_classes", torch.tensor(seen) ]))
            let asTensor (rows: float[][]) = torch.tensor(rows |> Array.concat |> Array.map float32).reshape(int64 n, int64 classes)
            let batch = Batch(torch.zeros([| int64 n; 3L |]), torch.tensor(targets))
            let context =
                LossTermContext(0L, 1, batch, asTensor student,
                    Func<Collections.Generic.IReadOnlyDictionary<string, torch.Tensor>, Batch, torch.Tensor>(fun _ _ -> asTensor teacher))
            let loss = (plugin :> ILossTerm).Loss(context).item<float32>() |> float
            let logSoftmax (z: float[]) =
                let s = seen |> Array.map (fun c -> float32 z[int c] |> float) |> Array.map (fun v -> v / t)
                let m = Array.max s
                let lse = m + log (s |> Array.sumBy (fun v -> exp (v - m)))
                s |> Array.map (fun v -> v - lse)
            let expected =
                alpha * t * t * (Array.zip3 student teacher targets |> Array.sumBy (fun (zs, zt, y) ->
                    if y = -100L then 0.0 else
                    let lq, lp = logSoftmax zs, logSoftmax zt
                    Array.fold2 (fun acc a b -> acc + exp a * (a - b)) 0.0 lp lq))
            Expect.floatClose { absolute = 0.0; relative = 1e-5 } loss expected "the distillation term"
            Expect.isTrue (expected > 0.0) "a term that is not trivially zero"
        }
        test "a predictor returning the model's arg-max records exactly the built-in accuracies and losses: evaluation rows, the study matrix and the weights, bitwise" {
            let withArgmax = study (method "argmax-predictor" "")
            Expect.equal (evaluations withArgmax) (evaluations plain.Value) "every evaluation row, every digit"
            Expect.equal (matrix withArgmax) (matrix plain.Value) "the study's matrices, every digit"
            Expect.equal (finalWeights withArgmax) (finalWeights plain.Value) "the same training"
        }
        test "the accuracy a run records is its predictor's (1 when it predicts the targets, 0 when it predicts the next class) in evaluation rows and the study matrix, and the loss stays the model's" {
            let strip (col: int) (rs: string[] list) = rs |> List.map (fun r -> r |> Array.removeAt col)
            for shift, accuracy in [ 0, "1"; 1, "0" ] do
                let runDir = study (method "target-predictor" (sprintf "shift = %d" shift))
                let evals, cells = evaluations runDir, matrix runDir
                Expect.isNonEmpty evals "evaluations during training were recorded"
                Expect.equal (evals |> List.map (fun r -> r[4]) |> List.distinct) [ accuracy ] (sprintf "shift %d: every evaluation row's accuracy" shift)
                Expect.equal (cells |> List.map (fun r -> r[4]) |> List.distinct) [ accuracy ] (sprintf "shift %d: every cell of R (test and validation)" shift)
                Expect.equal (strip 4 evals) (strip 4 (evaluations plain.Value)) "evaluation losses are the model's, bitwise"
                Expect.equal (strip 4 cells) (strip 4 (matrix plain.Value)) "the matrix's losses are the model's, bitwise"
        }
        test "a run with two predictors is refused before it starts, naming both" {
            let dir = tempDir "predictor-two"
            let r = research dir [ "study"; studyConfig dir (method "argmax-predictor" "" + method "target-predictor" ""); "--plugins"; fixture ]
            Expect.notEqual r.ExitCode 0 "refused"
            Expect.stringContains r.Err "'argmax-predictor' and 'target-predictor'" "names both"
            Expect.stringContains r.Err "at most one method predicts" "says why"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "runs")) && Directory.GetDirectories(Path.Combine(dir, "runs")).Length > 0) "no run folder"
        }
        test "an icarl study killed with SIGKILL mid-task and inside a task end resumes to weights, matrices, probes and metrics bitwise equal to an uninterrupted one" {
            let icarlTable = method "icarl" "memory = 30\nmix_ratio = 0.5"
            let result (runDir: string) =
                finalWeights runDir, matrix runDir, rows runDir "SELECT kind, name, value, json FROM study_values ORDER BY kind, name"
            let reference = result (study icarlTable)
            let _, cells, _ = reference
            Expect.isTrue (cells |> List.exists (fun r -> r[0] = "2" && r[1] = "0" && float r[4] > 0.0)) "the first task is still recognised after the last (iCaRL predicted it)"
            // Mid-task 1 or 2 (after the first exemplars: a validation there reads the class means); a task end reads its
            // data three times in batches of 50 (4 batches each: herding's features, the classes, the chosen items), all
            // before task 0's row is evaluated.
            let rng = Random(20261207)
            for variable, n in [ "RESEARCH_KILL_AFTER_MICROBATCHES", rng.Next(14, 35); "RESEARCH_KILL_AFTER_CONSOLIDATION_BATCHES", rng.Next(2, 12) ] do
                let dir = tempDir "predictor-resume"
                let path = studyConfig dir icarlTable
                let killed = runProcessWith [ variable, string n ] dir "dotnet" [ Path.Combine(binDir, "research.dll"); "study"; path ]
                Expect.equal killed.ExitCode 137 (sprintf "killed by SIGKILL at %s=%d" variable n)
                let runDir = Array.exactlyOne (runDirs dir)
                let r = research dir [ "study"; path; "--resume"; runDir ]
                Expect.equal r.ExitCode 0 (sprintf "resume after %s=%d: %s" variable n r.Err)
                Expect.equal (result runDir) reference (sprintf "bitwise equal after %s=%d" variable n)
        }
    ]
