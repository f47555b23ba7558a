namespace Research.Core.Tracking;

/// <summary>What summaries read from a run store: a run's final value of a split, and mean ± interval over seeds.</summary>
public static class RunResults
{
    /// <summary>
    /// The final <paramref name="column"/> (<c>accuracy</c> or <c>loss</c>) of a split: for a study, the average over
    /// the tasks after the last task; otherwise the run's last evaluation of that split. Null when there is none.
    /// </summary>
    public static double? Final(RunStore store, string runId, string split, string column = "accuracy")
    {
        if (column is not ("accuracy" or "loss")) throw new ArgumentException($"column must be accuracy or loss, not {column}", nameof(column));
        if (store.Query("SELECT MAX(after_task) FROM study_matrix WHERE run_id = $r", ("$r", runId)).FirstOrDefault()?[0] is long last)
            return store.Query($"SELECT AVG({column}) FROM study_matrix WHERE run_id = $r AND split = $s AND after_task = $t",
                ("$r", runId), ("$s", split), ("$t", last)).FirstOrDefault()?[0] as double?;
        return store.Query($"SELECT {column} FROM evaluations WHERE run_id = $r AND split = $s ORDER BY step DESC, rowid DESC LIMIT 1",
            ("$r", runId), ("$s", split)).FirstOrDefault()?[0] as double?;
    }

    /// <summary>
    /// The mean, the half-width of its 95% confidence interval t₀.₉₇₅,ₙ₋₁ · s/√n (Student t with n − 1 degrees of
    /// freedom: the interval for the mean of normal values with unknown variance) and the sample standard deviation s.
    /// A single value has no interval (NaN half-width and sd).
    /// </summary>
    public static (double Mean, double HalfWidth, double Sd) MeanCi(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) throw new ArgumentException("no values", nameof(xs));
        var mean = xs.Average();
        if (xs.Count < 2) return (mean, double.NaN, double.NaN);
        var sd = MathNet.Numerics.Statistics.Statistics.StandardDeviation(xs);
        return (mean, MathNet.Numerics.Distributions.StudentT.InvCDF(0, 1, xs.Count - 1, 0.975) * sd / Math.Sqrt(xs.Count), sd);
    }
}
