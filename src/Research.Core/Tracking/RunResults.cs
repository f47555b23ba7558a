namespace Research.Core.Tracking;

/// <summary>What summaries compute from the values read from run stores (<see cref="RunReader.Final"/>): mean ± interval over seeds.</summary>
public static class RunResults
{
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
