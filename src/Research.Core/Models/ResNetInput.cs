using Research.Core.Data;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Research.Core.Models;

/// <summary>
/// Images as the published ResNet-18 expects them, for the data pipeline to call per batch (a whole preprocessed
/// dataset would not fit: 60,000 images at 224 px are 36 GB of floats).
/// </summary>
/// <remarks>
/// What the file expects (ML.NET's DnnImageFeaturizer, which runs <c>ResNetPreprocess.onnx</c> before
/// <c>ResNet18.onnx</c>): RGB pixels on the 0–255 scale, reordered to BGR, minus a mean image [3, 224, 224] whose
/// channels average <see cref="BgrMeans"/> (it varies by about ±10 across the image). Here the per-channel means are
/// subtracted instead, which works at any size. BatchNorm in eval mode divides by running variances in the thousands:
/// an input on another scale (0–1, or standardised) is not refused anywhere, it just yields features the network was never
/// trained on.
/// </remarks>
public static class ResNetInput
{
    /// <summary>The means of the channels of the published mean image, B, G, R, on the 0–255 scale.</summary>
    public static IReadOnlyList<float> BgrMeans { get; } = [103.0626f, 115.9029f, 123.1516f];

    /// <summary>
    /// Grey images in [0, 1] ([B, H, W] or [B, 1, H, W]) → [B, 3, S, S]: resized bilinearly (align_corners false) to
    /// <paramref name="side"/>, scaled to 0–255, the grey value put in all three channels (so the BGR order only
    /// decides which mean each channel loses), then the channel means <see cref="BgrMeans"/> subtracted.
    /// </summary>
    public static Tensor FromGrey(Tensor grey, long side)
    {
        if (grey.dim() == 3) grey = grey.unsqueeze(1);
        if (grey.dim() != 4 || grey.shape[1] != 1)
            throw new ArgumentException($"grey images are [B, H, W] or [B, 1, H, W], not [{string.Join(", ", grey.shape)}]");
        using var scope = NewDisposeScope();
        var x = grey.shape[2] == side && grey.shape[3] == side ? grey
            : F.interpolate(grey, [side, side], mode: InterpolationMode.Bilinear, align_corners: false);
        var means = tensor(BgrMeans.ToArray(), [1, 3, 1, 1], dtype: x.dtype, device: x.device);
        return x.mul(255f).expand(-1, 3, -1, -1).sub(means).MoveToOuterDisposeScope();
    }

    /// <summary>The repository's Fashion-MNIST features (standardised, [B, 784]; <see cref="FashionMnist"/>) → [B, 3, S, S].</summary>
    public static Tensor FromFashionMnist(Tensor features, long side)
    {
        using var scope = NewDisposeScope();
        return FromGrey(FashionMnist.Pixels(features), side).MoveToOuterDisposeScope();
    }
}
