using Research.Abstractions;
using Research.Core.Models;
using Research.Core.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Probes;

/// <summary>
/// A classifier's representation of its inputs: what a submodule reads — the one its kind names
/// (<see cref="ModelKind.Representation"/>), by default its final Linear, <c>head</c>. Every built-in classifier names its
/// last layer so (Mlp, Cnn, ResNet, Bert and Gpt with classes), which makes the penultimate features of any of them comparable with <see cref="LinearCka"/> and <see cref="SimilarityAgreement"/>,
/// and a <see cref="LinearProbe"/> fitted on them a drop-in replacement for the head.
/// </summary>
public static class Representation
{
    /// <summary>The name of the layer whose input is the representation, unless a kind names another.</summary>
    public const string Head = ModelKind.HeadModule;

    /// <summary>
    /// The input of <paramref name="model"/>'s submodule <paramref name="module"/> (its <c>head</c> unless given) for every
    /// item of <paramref name="batches"/>, float32 [N, d] on the CPU, in batch order, in eval mode and without gradients
    /// (<see cref="RepresentationFeatures.Of"/>, which the training loop's methods read too).
    /// </summary>
    public static Tensor Features(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> batches, PrecisionPolicy? precision = null, string module = Head) =>
        RepresentationFeatures.Of(model, batches, precision, module);
}
