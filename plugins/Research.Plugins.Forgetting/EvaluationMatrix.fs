/// The shape checks and per-task bookkeeping every metric shares. Row i of a matrix is "after training
/// task i", column j is "evaluated on task j".
module internal Research.Plugins.Forgetting.EvaluationMatrix

open System.Collections.Generic
open Research.Abstractions

let private checkSquare (name: string) (t: int) (matrix: double[][]) =
    if isNull (box matrix) then invalidArg "record" $"the evaluation record has no {name} matrix"
    if matrix.Length <> t then
        invalidArg "record" $"{name} must be T × T = {t} × {t} (a row per task trained, a column per task evaluated); it has {matrix.Length} rows"
    matrix |> Array.iteri (fun i row ->
        let n = if isNull (box row) then 0 else row.Length
        if n <> t then invalidArg "record" $"{name} must be T × T = {t} × {t}; row {i} has {n} entries")

/// T, the number of tasks, after checking that the record has T ≥ 2 tasks and T × T accuracy and loss
/// matrices. With one task nothing was trained after it, so there is nothing to forget or transfer.
let taskCount (record: EvaluationRecord) : int =
    if isNull (box record) then nullArg "record"
    if isNull (box record.Tasks) then invalidArg "record" "the evaluation record has no task list"
    let t = record.Tasks.Count
    if t < 2 then
        invalidArg "record" $"the evaluation record has {t} task(s); forgetting metrics need T ≥ 2 (a task evaluated before and after training a later one)"
    checkSquare "Accuracy" t record.Accuracy
    checkSquare "Loss" t record.Loss
    t

/// g j for each task j ≤ T − 2: the tasks that some later training could have changed.
let earlierTasks (t: int) (g: int -> float) : float[] = Array.init (t - 1) g

/// Per-task values defined for j ≤ T − 2, as a list over all T tasks: the last task's entry is NaN,
/// because no training followed it (0 would claim "measured, no forgetting").
let withLastUndefined (values: float[]) : IReadOnlyList<float> = Array.append values [| nan |]

/// The mean of the per-task values defined for j ≤ T − 2, and those values with the last task's NaN.
let meanOverEarlierTasks (values: float[]) = MetricValue(Array.average values, withLastUndefined values)
