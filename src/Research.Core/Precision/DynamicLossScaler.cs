namespace Research.Core.Precision;

/// <summary>
/// Dynamic loss scaling for fp16 (Micikevicius et al. 2018, "Mixed Precision Training"; PyTorch's GradScaler):
/// the loss is multiplied by S before backward so small gradients do not flush to zero in fp16; the fp32
/// master gradient is divided by S. A step whose gradient is not finite is skipped and S ← S·backoff; after
/// <see cref="GrowthInterval"/> finite steps in a row, S ← S·growth. TorchSharp has no GradScaler: this is it.
/// </summary>
public sealed class DynamicLossScaler(double initialScale = 65536, double growthFactor = 2.0, double backoffFactor = 0.5, int growthInterval = 2000)
{
    public double Scale { get; private set; } = initialScale;
    public int GrowthInterval => growthInterval;
    /// <summary>Finite steps since the last change of scale.</summary>
    public int GoodSteps { get; private set; }
    /// <summary>Steps skipped so far because of inf/NaN gradients.</summary>
    public long SkippedSteps { get; private set; }

    /// <summary>Records the outcome of a step; returns true when the step may be applied.</summary>
    public bool Update(bool gradientsFinite)
    {
        if (!gradientsFinite)
        {
            Scale *= backoffFactor;
            GoodSteps = 0;
            SkippedSteps++;
            return false;
        }
        if (++GoodSteps >= growthInterval)
        {
            Scale *= growthFactor;
            GoodSteps = 0;
        }
        return true;
    }

    /// <summary>Restores a saved state (checkpoints).</summary>
    public void Restore(double scale, int goodSteps, long skipped)
    {
        Scale = scale; GoodSteps = goodSteps; SkippedSteps = skipped;
    }
}
