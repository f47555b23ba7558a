namespace Research.Plugins.Forgetting

open System
open System.Collections.Generic
open Research.Abstractions
open TorchSharp

/// <summary>
/// Equal-width confidence bins (Guo, Pleiss, Sun &amp; Weinberger 2017, "On Calibration of Modern Neural Networks", §2):
/// bin m (1-based) holds the items whose confidence p̂ = max_c softmax(z)_c lies in ((m−1)/M, m/M], and
/// ECE = Σ_m (|B_m|/n) |acc(B_m) − conf(B_m)| = (1/n) Σ_m |Σ_{i∈B_m} (1[ŷᵢ = yᵢ] − p̂ᵢ)|.
/// </summary>
type CalibrationBins(bins: int) =
    do if bins < 1 then invalidArg (nameof bins) $"{bins} bins: ECE needs at least 1"
    let count = Array.zeroCreate<float> bins
    let confidence = Array.zeroCreate<float> bins
    let correct = Array.zeroCreate<float> bins

    /// The 0-based bin of a confidence c ∈ (0, 1]: m − 1 for c ∈ ((m−1)/M, m/M]. The bounds are compared as the doubles
    /// (m−1)/M and m/M, so a confidence on a boundary (0.6 with M = 5) falls in the bin it closes, not where c·M's
    /// rounding would put it.
    static member Bin (bins: int) (c: float) =
        let m = int (ceil (c * float bins))
        let m = if m > 1 && float (m - 1) / float bins >= c then m - 1 elif float m / float bins < c then m + 1 else m
        (min bins (max 1 m)) - 1

    member _.Bins = bins
    /// n, the items added.
    member _.Items = Array.sum count

    /// Adds one item: its confidence p̂ and whether its prediction was right.
    member _.Add(c: float, isCorrect: bool) =
        let m = CalibrationBins.Bin bins c
        count[m] <- count[m] + 1.0
        confidence[m] <- confidence[m] + c
        if isCorrect then correct[m] <- correct[m] + 1.0

    /// Adds a batch's rows: logits [n, C] against targets [n] (items whose target is <see cref="Batch.IgnoreIndex"/> do
    /// not count). The tensors are the caller's; what this makes is freed here.
    member this.Add(logits: torch.Tensor, targets: torch.Tensor) =
        use ignored = Batch.IgnoreIndex.ToScalar()
        use counted = targets.ne(ignored)
        use found = counted.nonzero()
        use index = found.reshape(-1L)
        use rows = logits.index_select(0L, index)
        use kept = targets.index_select(0L, index)
        use probabilities = rows.to_type(torch.ScalarType.Float32).softmax(-1L)
        let struct (top, predicted) = probabilities.max(-1L)
        use top = top
        use predicted = predicted
        use right = predicted.eq(kept)
        use top64 = top.to_type(torch.ScalarType.Float64).cpu()
        use right8 = right.cpu()
        let cs = top64.data<float>().ToArray()
        let ok = right8.data<bool>().ToArray()
        for i in 0 .. cs.Length - 1 do this.Add(cs[i], ok[i])

    /// ECE of the items added: (1/n) Σ_m |correct_m − Σ confidence_m|; NaN when there are none.
    member _.Error =
        let n = Array.sum count
        if n = 0.0 then nan else (Array.map2 (fun k c -> abs (k - c)) correct confidence |> Array.sum) / n

/// Options of ece.
type CalibrationOptions() =
    /// M, the equal-width confidence bins ((m−1)/M, m/M] (Guo et al. 2017 use 15).
    [<Option(Min = 1.0, Max = 10000.0)>]
    member val Bins = 15 with get, set

/// <summary>
/// Expected calibration error per task (Guo et al. 2017, equal-width bins; see <see cref="CalibrationBins"/>): at each
/// task end i it measures the trained model on every task j's test split — the split the record's R[i][j] is measured on
/// — and adds the row ECE[i][·] as the probe <c>expected_calibration_error/M</c> (T × T, M the bins). Value: the mean over
/// tasks of ECE[T−1][j], after the last task; PerTask: ECE[T−1][j]. Lower is better calibrated (0: confidence equals
/// accuracy in every bin). A causal language model's items are its predicted tokens; a task-incremental study's
/// confidences are over the item's task head, as its accuracy is.
/// </summary>
[<Plugin("ece", Summary = "expected calibration error per task (Guo et al. 2017), M equal-width bins; mean over tasks after the last")>]
type ExpectedCalibrationError(options: CalibrationOptions) =
    let probe = $"expected_calibration_error/{options.Bins}"
    new() = ExpectedCalibrationError(CalibrationOptions())

    /// The probe it writes and reads: ECE[i][j] with this metric's bins.
    member _.Probe = probe

    interface ITaskHooks with
        member _.TaskEnd(context) =
            let row = Array.init context.TaskCount (fun j ->
                let bins = CalibrationBins(options.Bins)
                for batch in context.TestData.Invoke j do
                    use logits = context.Logits.Invoke batch
                    let struct (rows, targets) = context.Rows.Invoke(logits, batch)
                    use rows = rows
                    use targets = targets
                    bins.Add(rows, targets)
                bins.Error)
            context.AddProbe.Invoke(probe, row)

    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            let mutable ece = Unchecked.defaultof<double[][]>
            if isNull (box record.Probes) || not (record.Probes.TryGetValue(probe, &ece)) then
                let measured =
                    if isNull (box record.Probes) then [] else
                    record.Probes.Keys |> Seq.filter (fun k -> k.StartsWith "expected_calibration_error/") |> Seq.sort |> List.ofSeq
                invalidArg "record" (
                    $"ece (bins = {options.Bins}) reads the probe '{probe}', which the study measures at each task end; " +
                    (if measured.IsEmpty then "this study was run without ece, and the model is not stored to measure it now"
                     else "this study measured " + String.Join(", ", measured) + ": choose those bins"))
            let last = ece[t - 1]
            if isNull (box last) || last.Length <> t then
                invalidArg "record" $"the probe '{probe}' must have T = {t} entries in row {t - 1} (one per task); it has {if isNull (box last) then 0 else last.Length}"
            MetricValue(Array.average last, last :> IReadOnlyList<float>)
