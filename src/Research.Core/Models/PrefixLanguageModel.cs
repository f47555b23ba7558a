using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// A causal language model that also reads input embeddings, not only token ids: a vision-language model (<see cref="Vlm"/>)
/// puts its image prefix in front of the caption's token embeddings this way (the LLaVA / ClipCap recipe), and the model
/// adds its own positions (GPT's learned table, Llama's rotary angles) to the whole sequence.
/// </summary>
public interface IPrefixLanguageModel
{
    /// <summary>d, the width of an embedding.</summary>
    long Width { get; }

    /// <summary>V, the ids it reads and the logits it gives.</summary>
    long Vocab { get; }

    /// <summary>Positions the model reads at most (prefix and tokens together).</summary>
    long MaxPositions { get; }

    /// <summary>The token embeddings [B, T, d] of ids [B, T] (the look-up alone, no positions).</summary>
    Tensor EmbedTokens(Tensor tokens);

    /// <summary>Logits [B, T, V] of a sequence of input embeddings [B, T, d]: what <c>forward</c> computes after its look-up,
    /// so <c>LogitsOfEmbeddings(EmbedTokens(x)) = forward(x)</c>.</summary>
    Tensor LogitsOfEmbeddings(Tensor embeddings);
}
