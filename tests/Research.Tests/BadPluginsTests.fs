/// Issue 28's damaged study records and plugin results of the wrong shape: a store that holds what no run can have
/// written is refused by its one reader, for every command that reads it; a plugin result that is not what the core must
/// receive fails the run where the core receives it, naming the plugin, its DLL, the member and what was wrong.
module Research.Tests.BadPluginsTests

open System
open System.IO
open Expecto
open Microsoft.Data.Sqlite
open Research.Core.Tracking
open Research.Tests.TestSupport

let private cli = researchInProcess

// ---------------------------------------------------------------------------------------------------------------------
// Damaged study records

/// A real 2-task study (synthetic clusters), made once; each case corrupts a copy of its run.sqlite.
let private study =
    lazy (
        let dir = tempDir "bad-record-study"
        let path = syntheticStudy dir "s" ""
        let r = cli [ "study"; path ]
        if r.ExitCode <> 0 then failtestf "the study to corrupt did not run: %s" r.Err
        Path.Combine(onlyRunDir dir, RunStore.FileName))

/// One statement on a store, as a hand edit or a damaged disk would leave it: its scalar result (a rowid, say).
let private sql (store: string) (statement: string) =
    use db = new SqliteConnection(SqliteConnectionStringBuilder(DataSource = store, Pooling = false).ToString())
    db.Open()
    use cmd = db.CreateCommand()
    cmd.CommandText <- statement
    cmd.ExecuteScalar()

/// A copy of the study's run folder (its store) under a folder of its own, then `damage` applied: (folder of runs,
/// run folder, the rowid the damage names).
let private damaged (damage: string -> obj) =
    let root = tempDir "bad-record"
    let run = Path.Combine(root, "runs", "s")
    Directory.CreateDirectory run |> ignore
    let store = Path.Combine(run, RunStore.FileName)
    File.Copy(study.Value, store)
    let row = damage store
    Path.Combine(root, "runs"), run, Convert.ToInt64 row

/// The rowid of the test cell after task `i` on task `j`.
let private cell (store: string) (i: int) (j: int) =
    sql store (sprintf "SELECT rowid FROM study_matrix WHERE split = 'test' AND after_task = %d AND on_task = %d" i j)

/// Every command that reads a study's record refuses it: exit 2, one line naming the run folder, the table, the row and
/// what is wrong; no stack trace; no figure written. The sweeps' summaries read through the same reader (StudyRecord.Load).
let private refusedEverywhere (runs: string, run: string, row: int64) (table: string) (says: string) =
    let png = Path.Combine(Path.GetDirectoryName runs, "matrix.png")
    for args in [ [ "metrics"; runs ]; [ "runs"; "show"; run ]; [ "runs"; "list"; runs ]; [ "plot"; "matrix"; run; "-o"; png ] ] do
        let r = cli args
        let name = String.Join(" ", args |> List.truncate 2)
        Expect.equal r.ExitCode 2 (sprintf "%s: refused (exit 2); stdout %s stderr %s" name r.Out r.Err)
        let lines = r.Err.Trim().Split('\n')
        Expect.equal lines.Length 1 (sprintf "%s: one line: %s" name r.Err)
        for part in [ "damaged run record in " + run; sprintf "table %s, row %d" table row; says ] do
            Expect.stringContains lines[0] part (sprintf "%s names it" name)
        Expect.isFalse (r.Err.Contains "   at ") (sprintf "%s: no stack trace" name)
    Expect.isFalse (File.Exists png) "no figure of a damaged matrix"
    use reader = RunReader.Open(Path.Combine(run, RunStore.FileName))
    let id = (reader.Runs() |> Seq.exactlyOne).Id
    Expect.throwsT<InvalidDataException> (fun () -> Research.Core.Studies.StudyRecord.Load(reader, id) |> ignore) "the sweeps' reader refuses it too"

let private storeTests =
    [ test "stores: the undamaged copy of the study is read by every command (the cases below differ from it in one row)" {
          let runs, run, _ = damaged (fun _ -> box 0L)
          for args in [ [ "metrics"; runs ]; [ "runs"; "show"; run ]; [ "runs"; "list"; runs ] ] do
              let r = cli args
              Expect.equal r.ExitCode 0 (sprintf "%A: %s" args r.Err)
      }
      test "stores: a study matrix with an accuracy of 5.0 is refused by metrics, runs show, runs list and plot matrix, naming the folder, table study_matrix and the row" {
          let case = damaged (fun s -> let row = cell s 1 0 in sql s (sprintf "UPDATE study_matrix SET accuracy = 5.0 WHERE rowid = %O" row) |> ignore; row)
          refusedEverywhere case "study_matrix" "accuracy 5 is outside [0, 1]"
      }
      test "stores: a study matrix row for task 99 of a 2-task study is refused by every reader" {
          let case = damaged (fun s -> sql s "INSERT INTO study_matrix SELECT run_id, 99, on_task, split, loss, accuracy FROM study_matrix WHERE split = 'test' AND after_task = 0 AND on_task = 1; SELECT last_insert_rowid()")
          refusedEverywhere case "study_matrix" "after_task 99 is outside the study's 2 tasks (0–1)"
      }
      test "stores: a study matrix cell on task 99 is refused by every reader" {
          let case = damaged (fun s -> let row = cell s 1 1 in sql s (sprintf "UPDATE study_matrix SET on_task = 99 WHERE rowid = %O" row) |> ignore; row)
          refusedEverywhere case "study_matrix" "on_task 99 is outside the study's 2 tasks"
      }
      test "stores: a study matrix cell stored twice is refused by every reader, naming the second and the first" {
          let first = ref null
          let case =
              damaged (fun s ->
                  first.Value <- cell s 0 0
                  sql s "INSERT INTO study_matrix SELECT run_id, after_task, on_task, split, loss, accuracy FROM study_matrix WHERE split = 'test' AND after_task = 0 AND on_task = 0; SELECT last_insert_rowid()")
          refusedEverywhere case "study_matrix" "a second test cell after task 0 on task 0 of run"
          let _, run, _ = case
          let r = cli [ "runs"; "show"; run ]
          Expect.stringContains r.Err (sprintf "(row %O is the first)" first.Value) "the first named too"
      }
      test "stores: a study that ran to its end with a cell missing (not the square T × T) is refused by every reader" {
          let case = damaged (fun s -> let row = cell s 1 0 in sql s (sprintf "DELETE FROM study_matrix WHERE rowid = %O" row) |> ignore; cell s 1 1)
          refusedEverywhere case "study_matrix" "test row after task 1 holds 1 of its 2 cells"
      }
      test "stores: a negative or infinite loss in a study matrix is refused by every reader" {
          for value, shown in [ "-1.5", "loss -1.5 is not a finite value ≥ 0"; "1e999", "loss Infinity is not a finite value ≥ 0" ] do
              let case = damaged (fun s -> let row = cell s 0 1 in sql s (sprintf "UPDATE study_matrix SET loss = %s WHERE rowid = %O" value row) |> ignore; row)
              refusedEverywhere case "study_matrix" shown
      }
      test "stores: text where a task index belongs is refused by every reader" {
          let case = damaged (fun s -> let row = cell s 1 0 in sql s (sprintf "UPDATE study_matrix SET after_task = 'one' WHERE rowid = %O" row) |> ignore; row)
          refusedEverywhere case "study_matrix" "after_task is the text 'one', not an integer"
      }
      test "stores: task names that are not a JSON list of names are refused by every reader" {
          let case =
              damaged (fun s ->
                  let row = sql s "SELECT rowid FROM study_values WHERE kind = 'tasks'"
                  sql s (sprintf "UPDATE study_values SET json = '{\"a\": 1}' WHERE rowid = %O" row) |> ignore
                  row)
          refusedEverywhere case "study_values" "task names: not the JSON it must be"
      }
      test "stores: a probe that is not JSON, or has more rows than the study has tasks, is refused by metrics and runs show" {
          for json, says in [ "[[1, 2", "probe 'parameter_change_norm': not the JSON it must be"; "[[1],[2],[3]]", "probe 'parameter_change_norm' has 3 rows, more than the study's 2 tasks" ] do
              let runs, run, row =
                  damaged (fun s ->
                      let row = sql s "SELECT rowid FROM study_values WHERE kind = 'probe' AND name = 'parameter_change_norm'"
                      sql s (sprintf "UPDATE study_values SET json = '%s' WHERE rowid = %O" json row) |> ignore
                      row)
              for args in [ [ "metrics"; runs ]; [ "runs"; "show"; run ] ] do
                  let r = cli args
                  Expect.equal r.ExitCode 2 (sprintf "%A: %s" args r.Err)
                  for part in [ "damaged run record in " + run; sprintf "table study_values, row %d" row; says ] do
                      Expect.stringContains r.Err part (sprintf "%A names it" args)
      }
      test "stores: an evaluation with an accuracy of 5.0 is refused by runs show and runs export" {
          let runs, run, row =
              damaged (fun s ->
                  let row = sql s "SELECT MIN(rowid) FROM evaluations"
                  sql s (sprintf "UPDATE evaluations SET accuracy = 5.0 WHERE rowid = %O" row) |> ignore
                  row)
          for args in [ [ "runs"; "show"; run ]; [ "runs"; "export"; runs ] ] do
              let r = cli args
              Expect.equal r.ExitCode 2 (sprintf "%A: %s" args r.Err)
              for part in [ "damaged run record in " + run; sprintf "table evaluations, row %d" row; "accuracy 5 is outside [0, 1]" ] do
                  Expect.stringContains r.Err part (sprintf "%A names it" args)
      } ]

// ---------------------------------------------------------------------------------------------------------------------
// Plugin results of the wrong shape, and plugin faults that reached the catch-all handler

let private faulty = fixtureDir "Plugin.Faulty"

/// The one line that names the plugin's failure: exit 1; it names the plugin, its DLL and each of `parts` (the member,
/// the step, what was wrong); no stack trace, nothing unhandled. Returns the line.
let private failureLine (r: ProcessResult) (plugin: string) (parts: string list) =
    Expect.equal r.ExitCode 1 (sprintf "the run failed (exit 1); stderr %s" r.Err)
    Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
    Expect.isFalse (r.Err.Contains "Unhandled") "nothing unhandled"
    match r.Err.Split('\n') |> Array.tryFind (fun l -> l.Contains plugin) with
    | None -> failtestf "no line names %s: %s" plugin r.Err
    | Some line ->
        for part in "Plugin.Faulty.dll" :: parts do Expect.stringContains line part "the line names it"
        line

/// The run of `dir` is recorded as failed, with the reason naming the plugin and what was wrong.
let private recordedFailed (dir: string) (plugin: string) (parts: string list) =
    use reader = RunReader.Open(Path.Combine(onlyRunDir dir, RunStore.FileName))
    let run = reader.Runs() |> Seq.exactlyOne
    Expect.equal run.Status "failed" "recorded as failed"
    for part in plugin :: "Plugin.Faulty.dll" :: parts do Expect.stringContains (nonNull run.Error) part "with the reason"

/// A training run (synthetic, 8 features) with `extra` continuing [train], and the Faulty fixture's plugins.
let private train (prefix: string) (extra: string) =
    let dir = tempDir prefix
    dir, cli [ "train"; syntheticConfig dir extra; "--plugins"; faulty ]

/// A 2-task study (synthetic, 8 features) with `extra` sections, and the Faulty fixture's plugins.
let private studyWith (prefix: string) (extra: string) =
    let dir = tempDir prefix
    dir, cli [ "study"; syntheticStudy dir "s" extra; "--plugins"; faulty ]

/// A training run with one method of the Faulty fixture and its fault: it fails naming the plugin and `parts`, and is
/// recorded as failed with that reason.
let private methodFails (name: string) (fault: string) (parts: string list) =
    let dir, r = train ("bad-" + name) (sprintf "[[methods]]\nname = \"%s\"\nfault = \"%s\"\n" name fault)
    let plugin = sprintf "method '%s' (" name
    failureLine r plugin parts |> ignore
    recordedFailed dir plugin parts

let private memoryCases =
    [ "dtype", [ "from Sample at step 0"; "'input' as a Float64 tensor of shape [32, 8]"; "the task's 'input' is a Float32 tensor of shape [64, 8]" ]
      "names", [ "from Sample at step 0"; "a batch of [pixels, targets]"; "the task's batches hold [input, targets]" ]
      "rows", [ "from Sample at step 0"; "35 items"; "32 were asked for" ]
      "nan", [ "from Sample at step 0"; "'input' with values that are not finite" ]
      "null", [ "returned null from Sample at step 0" ]
      "count", [ "returned -3 from Count at step 0"; "a memory holds 0 items or more" ]
      "huge-mix", [ "returned 1E+300 from MixRatio"; "memory items in a micro-batch of 64" ] ]

let private pluginTests =
    [ test "plugins: a data role whose Sample returns [n, 5] items for 784-feature data fails the study at its first mixed step, naming the plugin, its DLL, Sample, the step and both shapes; recorded as failed" {
          let dir = tempDir "bad-memory-784"
          let path = syntheticStudy dir "s" "[[methods]]\nname = \"bad-memory\"\nfault = \"features\"\n"
          let r = cli [ "study"; path; "--plugins"; faulty; "--set"; "data.synthetic_features=784" ]
          let parts = [ "from Sample at step 0"; "'input' as a Float32 tensor of shape [16, 5]"; "the task's 'input' is a Float32 tensor of shape [32, 784]" ]
          failureLine r "method 'bad-memory' (" parts |> ignore
          recordedFailed dir "method 'bad-memory' (" parts
      }
      for fault, parts in memoryCases do
          test (sprintf "plugins: a data role whose memory is wrong (%s) fails the run naming the plugin, its DLL, the member, the step and what was wrong; recorded as failed" fault) {
              methodFails "bad-memory" fault parts
          }
      test "plugins: a data role whose mix ratio is NaN is refused before the run starts, naming the plugin, its DLL and MixRatio" {
          let dir, r = train "bad-mix-ratio" "[[methods]]\nname = \"bad-memory\"\nfault = \"mix-ratio\"\n"
          failureLine r "method 'bad-memory' (" [ "returned NaN from MixRatio"; "finite and ≥ 0" ] |> ignore
          Expect.isFalse (Directory.Exists(Path.Combine(dir, "runs"))) "no run was started"
      }
      test "plugins: a penalty outside the autograd graph (a constant) fails the run naming the plugin, Penalty and the step; recorded as failed" {
          methodFails "bad-penalty" "constant" [ "from Penalty at step 0"; "a penalty without a gradient" ]
      }
      test "plugins: a gradient hook that leaves the task gradient NaN fails the run naming the plugin, BeforeUpdate and the step, not as the run's divergence; recorded as failed" {
          let dir, r = train "bad-hook" "[[methods]]\nname = \"nan-hook\"\n"
          let parts = [ "from BeforeUpdate at step 0"; "a task gradient with values that are not finite" ]
          failureLine r "method 'nan-hook' (" parts |> ignore
          recordedFailed dir "method 'nan-hook' (" parts
      }
      test "plugins: a metric with more per-task values than the study has tasks fails naming the plugin, its DLL and Compute; recorded as failed" {
          let dir, r = studyWith "bad-metric-per-task" "[[metrics]]\nname = \"bad-metric\"\nfault = \"per-task\"\n"
          let parts = [ "from Compute"; "5 per-task values"; "the study has 2 tasks" ]
          failureLine r "forgetting metric 'bad-metric' (" parts |> ignore
          recordedFailed dir "forgetting metric 'bad-metric' (" parts
      } ]

/// A training run with one of the Faulty fixture's shaped plugins and its options: it fails naming the plugin, its DLL
/// and `parts`, and is recorded as failed with that reason.
let private shapedFails (plugin: string) (options: string) (parts: string list) =
    let dir, r = train ("shaped-" + plugin) (sprintf "[[methods]]\nname = \"%s\"\n%s\n" plugin options)
    let who = sprintf "method '%s' (" plugin
    failureLine r who parts |> ignore
    recordedFailed dir who parts

let private shapeTests =
    [ test "plugins: a data role whose Sample returns fewer items than asked for while its Count says it holds more fails the run naming the plugin, Sample, the step and both counts; recorded as failed" {
          shapedFails "shaped-memory" "rows_delta = -1" [ "returned 31 items from Sample at step 0"; "32 were asked for and Count says it holds 64" ]
      }
      test "plugins: a data role whose Sample returns fewer items because its Count says it holds fewer runs to the end (min(asked, Count) items)" {
          let dir, r = train "shaped-count" "[[methods]]\nname = \"shaped-memory\"\ncount = 5\n"
          Expect.equal r.ExitCode 0 (sprintf "the run finished: %s" r.Err)
          use reader = RunReader.Open(Path.Combine(onlyRunDir dir, RunStore.FileName))
          Expect.equal (reader.Runs() |> Seq.exactlyOne).Status "finished" "recorded as finished"
      }
      for target in [ "3"; "-1"; "1000000" ] do
          test (sprintf "plugins: a data role whose memory items carry target %s (outside the model's 3 outputs) fails the run naming the plugin, Sample and the target, not with the loss's native error; recorded as failed" target) {
              shapedFails "shaped-memory" (sprintf "targets = \"%s\"" target) [ sprintf "returned a target of %s from Sample at step 0" target; "targets are ids 0–2 of the model's outputs, or -100" ]
          }
      test "plugins: a data role whose memory items all carry -100 (items that do not count) runs to the end" {
          let _, r = train "shaped-ignore" "[[methods]]\nname = \"shaped-memory\"\ntargets = \"ignore\"\n"
          Expect.equal r.ExitCode 0 (sprintf "the run finished: %s" r.Err)
      }
      for change, says in
          [ "set-shape", "the task gradient of 'layers.0.weight' as a Float32 tensor of shape [129] on storage of its own (it was a Float32 tensor of shape [16, 8])"
            "set-same", "the task gradient of 'layers.0.weight' as a Float32 tensor of shape [16, 8] on storage of its own (it was a Float32 tensor of shape [16, 8])"
            "replace", "another tensor in place of the task gradient of 'layers.0.weight'" ] do
          test (sprintf "plugins: a gradient hook that swaps what the task gradient is (%s) instead of changing it in place fails the run naming the plugin, BeforeUpdate, the step and the parameter; recorded as failed" change) {
              shapedFails "shaped-hook" (sprintf "change = \"%s\"" change) [ says + " from BeforeUpdate at step 0"; "a hook changes the task gradient in place" ]
          }
      test "plugins: a gradient hook that scales the task gradient in place runs to the end" {
          let _, r = train "shaped-hook-scale" "[[methods]]\nname = \"shaped-hook\"\nchange = \"scale\"\n"
          Expect.equal r.ExitCode 0 (sprintf "the run finished: %s" r.Err)
      }
      test "plugins: a StateDict holding a complex tensor (no checkpoint holds one) fails the run naming the plugin, StateDict, the entry and the dtypes a checkpoint holds; recorded as failed" {
          shapedFails "shaped-state" "dtype = \"complex64\"" [ "returned a ComplexFloat32 tensor for 'kept' from StateDict at step 0"; "a checkpoint holds tensors of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL only" ]
      }
      test "plugins: a metric with an infinite per-task value fails the study naming the plugin, its DLL, Compute and the task; recorded as failed" {
          let dir, r = studyWith "shaped-metric-inf" "[[metrics]]\nname = \"shaped-metric\"\nper_task = 2\nper_task_value = \"-inf\"\n"
          let parts = [ "returned the per-task value -Infinity for task 0 from Compute"; "per-task values are finite numbers, or NaN where the metric is undefined" ]
          failureLine r "forgetting metric 'shaped-metric' (" parts |> ignore
          recordedFailed dir "forgetting metric 'shaped-metric' (" parts
      } ]

let private faultTests =
    [ test "plugin faults: a disposed penalty tensor fails the run naming the plugin, its DLL, Penalty and the step; recorded as failed" {
          methodFails "bad-penalty" "disposed" [ "returned a disposed tensor from Penalty at step 0" ]
      }
      test "plugin faults: a null StateDict fails the run naming the plugin, its DLL, StateDict and the step; recorded as failed" {
          methodFails "bad-state" "null" [ "returned null from StateDict at step 0" ]
      }
      test "plugin faults: a StateDict holding null, or a tensor the plugin disposed, fails the run naming the plugin and the entry; recorded as failed" {
          methodFails "bad-state" "null-tensor" [ "returned null for 'kept' from StateDict at step 0" ]
          methodFails "bad-state" "disposed" [ "returned a disposed tensor for 'kept' from StateDict at step 0" ]
      }
      test "plugin faults: a null metric result fails naming the plugin, its DLL and Compute after training; the matrices are stored and the run recorded as failed" {
          let dir, r = studyWith "bad-metric-null" "[[metrics]]\nname = \"bad-metric\"\nfault = \"null\"\n[[metrics]]\nname = \"bwt\"\n"
          let parts = [ "returned null from Compute (the metric's computation from the study's record, after training)" ]
          failureLine r "forgetting metric 'bad-metric' (" parts |> ignore
          recordedFailed dir "forgetting metric 'bad-metric' (" parts
          use reader = RunReader.Open(Path.Combine(onlyRunDir dir, RunStore.FileName))
          let id = (reader.Runs() |> Seq.exactlyOne).Id
          Expect.isTrue (reader.StudyMetric(id, "bwt").HasValue) "the other metric is computed and stored"
      }
      test "plugin faults: an infinite metric value fails naming the plugin, its DLL and Compute; recorded as failed" {
          let dir, r = studyWith "bad-metric-inf" "[[metrics]]\nname = \"bad-metric\"\nfault = \"infinite\"\n"
          let parts = [ "returned the value Infinity from Compute" ]
          failureLine r "forgetting metric 'bad-metric' (" parts |> ignore
          recordedFailed dir "forgetting metric 'bad-metric' (" parts
      }
      test "plugin faults: a 1e300 schedule multiplier fails the run naming the schedule, its DLL, Multiplier and the step (η · 1e300 is beyond fp32); recorded as failed" {
          let dir, r = train "bad-huge" "[schedule]\nname = \"huge-multiplier\"\n"
          let parts = [ "returned 1E+300 from Multiplier at step 0"; "beyond fp32's range" ]
          failureLine r "schedule 'huge-multiplier' (" parts |> ignore
          recordedFailed dir "schedule 'huge-multiplier' (" parts
      }
      for fault, parts in
          [ "core-name", [ "returned probe 'parameter_change_norm' from AddProbe (in TaskEnd) (at the end of task 0)"; "the core gave task 0's record a probe of that name already" ]
            "twice", [ "returned probe 'bad_probe' from AddProbe (in TaskEnd) (at the end of task 0)"; "method 'bad-probe' gave task 0's record a probe of that name already" ]
            "infinite", [ "an infinite value in probe 'bad_probe'"; "finite (NaN where undefined)" ] ] do
          test (sprintf "plugin faults: a duplicate or wrong probe (%s) fails the study at its first task end naming the plugin, its DLL and AddProbe; recorded as failed" fault) {
              let dir, r = studyWith ("bad-probe-" + fault) (sprintf "[[methods]]\nname = \"bad-probe\"\nfault = \"%s\"\n" fault)
              failureLine r "method 'bad-probe' (" parts |> ignore
              recordedFailed dir "method 'bad-probe' (" parts
          } ]

// Training results depend on the intra-op thread count, which is process-global: run sequenced.
let tests = testSequenced <| testList "bad plugins" (storeTests @ pluginTests @ shapeTests @ faultTests)
