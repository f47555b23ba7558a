using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>How the next token is chosen from the model's scores s (logits of the last position).</summary>
public abstract record Decoding
{
    Decoding() { }

    /// <summary>argmax s (the first index on ties); needs no generator.</summary>
    public sealed record Greedy : Decoding;

    /// <summary>
    /// A draw from softmax(s/τ) restricted to the <paramref name="TopK"/> highest scores (all when 0; ties with the k-th
    /// score are kept), from the caller's generator. τ → 0 approaches greedy; τ = 1 is the model's own distribution.
    /// </summary>
    /// <param name="Temperature">τ &gt; 0.</param>
    /// <param name="TopK">How many of the highest-scoring tokens may be drawn; 0 = the whole vocabulary.</param>
    public sealed record Sample(double Temperature = 1.0, int TopK = 0) : Decoding;
}

/// <summary>What <see cref="Generation.Generate(Gpt, IReadOnlyList{long}, GenerationOptions, Generator?)"/> (and its Llama overload) does.</summary>
/// <param name="MaxNewTokens">The most tokens to add to the prompt.</param>
/// <param name="Decoding">Greedy, or sampling with a temperature and top-k.</param>
/// <param name="EndToken">Stop after emitting this token (it is part of the output), e.g. GPT-2's &lt;|endoftext|&gt; 50256.</param>
public sealed record GenerationOptions(int MaxNewTokens, Decoding Decoding, long? EndToken = null);

/// <summary>Autoregressive text generation from a <see cref="Gpt"/> or a <see cref="Llama"/>.</summary>
public static class Generation
{
    /// <summary>
    /// Continues <paramref name="prompt"/> one token at a time: each step runs the model on the last T_max tokens
    /// (the prompt and what has been generated so far, cropped to the context on the left), scores the next token from
    /// the last position and picks it by <see cref="GenerationOptions.Decoding"/>. No key/value cache: every step
    /// recomputes its whole window, O(n·T_max²) — simple, and exactly what <c>forward</c> computes. Runs in eval mode
    /// (no dropout) without gradients, and restores the model's mode afterwards.
    /// </summary>
    /// <param name="generator">Draws for <see cref="Decoding.Sample"/> (required there, so a sample is reproducible).</param>
    /// <returns>The new tokens only (at most <see cref="GenerationOptions.MaxNewTokens"/>; the end token included).</returns>
    public static long[] Generate(this Gpt model, IReadOnlyList<long> prompt, GenerationOptions options, Generator? generator = null) =>
        Generate(model, model.Shape.Vocab, model.Shape.MaxLen, prompt, options, generator);

    /// <summary>The same for a <see cref="Llama"/>: windows of at most <c>max_position_embeddings</c> tokens (rotary positions
    /// restart at 0 in each window, as in a forward pass on that window).</summary>
    public static long[] Generate(this Llama model, IReadOnlyList<long> prompt, GenerationOptions options, Generator? generator = null) =>
        Generate(model, model.Config.Vocab, model.Config.SlidingWindow > 0 ? Math.Min(model.Config.MaxPositions, model.Config.SlidingWindow) : model.Config.MaxPositions,
            prompt, options, generator);

    /// <summary>
    /// The same for a <see cref="Vlm"/>: the caption <paramref name="prompt"/> (which starts with the tokenizer's end-of-text
    /// id, as the captions it was trained on do) continued after the prefix of <paramref name="image"/> ([1, 1, 28, 28] or
    /// [1, 784], on the model's device), in windows of the language model's positions less the P prefix ones.
    /// </summary>
    public static long[] Generate(this Vlm model, Tensor image, IReadOnlyList<long> prompt, GenerationOptions options, Generator? generator = null)
    {
        if (image.shape[0] != 1) throw new ArgumentException($"one image at a time, not a batch of {image.shape[0]}", nameof(image));
        var lm = model.LanguageModel;
        return Generate(model, lm.Vocab, lm.MaxPositions - model.PrefixTokens, prompt, options, generator,
            window => model.Logits(image, window));
    }

    static long[] Generate(nn.Module<Tensor, Tensor> model, long vocab, long maxLen, IReadOnlyList<long> prompt, GenerationOptions options, Generator? generator,
        Func<Tensor, Tensor>? logits = null)
    {
        logits ??= model.forward;
        if (prompt.Count == 0) throw new ArgumentException("a prompt needs at least one token (GPT-2's texts start with <|endoftext|>, 50256)", nameof(prompt));
        foreach (var token in prompt)
            if (token < 0 || token >= vocab) throw new ArgumentException($"prompt token {token} is outside the vocabulary [0, {vocab})", nameof(prompt));
        if (options.MaxNewTokens < 0) throw new ArgumentException($"MaxNewTokens {options.MaxNewTokens} is negative", nameof(options));
        if (options.Decoding is Decoding.Sample sample)
        {
            if (!(sample.Temperature > 0) || double.IsInfinity(sample.Temperature)) throw new ArgumentException($"temperature {sample.Temperature} is not a positive number", nameof(options));
            if (sample.TopK < 0) throw new ArgumentException($"top-k {sample.TopK} is negative", nameof(options));
            if (generator is null) throw new ArgumentException("sampling draws from an explicit generator (pass one; the same seed gives the same text)", nameof(generator));
        }

        var device = model.parameters().First().device;
        var tokens = new List<long>(prompt);
        var output = new List<long>();
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            while (output.Count < options.MaxNewTokens)
            {
                using var scope = NewDisposeScope();
                var start = Math.Max(0, tokens.Count - (int)maxLen);
                var window = tensor(tokens.GetRange(start, tokens.Count - start).ToArray(), dtype: ScalarType.Int64, device: device).unsqueeze(0);
                var scores = logits(window).select(0, 0).select(0, -1);
                var next = Pick(scores, options.Decoding, generator);
                tokens.Add(next);
                output.Add(next);
                if (next == options.EndToken) break;
            }
        }
        finally { model.train(wasTraining); }
        return output.ToArray();
    }

    /// <summary>One token from scores [V].</summary>
    static long Pick(Tensor scores, Decoding decoding, Generator? generator)
    {
        switch (decoding)
        {
            case Decoding.Greedy:
                return scores.argmax().item<long>();
            case Decoding.Sample(var temperature, var topK):
                // float64 so that a low temperature does not overflow the softmax's exponent or lose small probabilities.
                var s = scores.to(ScalarType.Float64).div(temperature);
                if (topK > 0 && topK < s.shape[0])
                {
                    var kth = s.topk(topK).values[-1];
                    s = s.masked_fill(s.lt(kth), double.NegativeInfinity);
                }
                return multinomial(s.softmax(0), 1, generator: generator).item<long>();
            default:
                throw new ArgumentException($"unknown decoding {decoding}");
        }
    }
}
