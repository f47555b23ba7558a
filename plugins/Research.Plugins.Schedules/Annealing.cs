namespace Research.Plugins.Schedules;

/// <summary>A curve from <paramref name="start"/> at p = 0 to <paramref name="end"/> at p = 1.</summary>
public delegate double Curve(double start, double end, double p);

/// <summary>The decay shapes the schedules share, written as PyTorch's <c>OneCycleLR</c> writes them:
/// from a start value to an end value as the progress p goes from 0 to 1.</summary>
public static class Annealing
{
    /// <summary>e + (s − e)(1 − p). PyTorch <c>_annealing_linear</c>.</summary>
    public static double Linear(double start, double end, double p) => end + (start - end) * (1 - p);

    /// <summary>e + (s − e)·½(1 + cos πp). PyTorch <c>_annealing_cos</c>; Loshchilov &amp; Hutter 2017.</summary>
    public static double Cosine(double start, double end, double p) =>
        end + (start - end) * 0.5 * (1 + Math.Cos(Math.PI * p));

    /// <summary>e + (s − e)(1 − √p): the "1 − sqrt" cooldown of Hägele et al. 2024, which falls fastest
    /// at its start.</summary>
    public static double OneMinusSqrt(double start, double end, double p) => end + (start - end) * (1 - Math.Sqrt(p));
}
