namespace Research.Abstractions;

/// <summary>
/// Text ↔ token ids, for models that read token ids. <see cref="Encode"/> gives the ids of a text without special
/// tokens; a dataset builder adds <see cref="SequencePrefix"/>, <see cref="SequenceSuffix"/>, end-of-text and padding
/// where the model expects them.
/// </summary>
public interface ITextTokenizer
{
    /// <summary>A short name for reports ("gpt2", "bytes", "gpt2-8192", "wordpiece").</summary>
    string Name { get; }

    /// <summary>V: every id is in [0, V), special ids included; the size of a model's embedding and output layers.</summary>
    int VocabSize { get; }

    /// <summary>The id that ends a document in a causal-LM stream (GPT-2's <c>&lt;|endoftext|&gt;</c>; BERT's [SEP]).</summary>
    int EndOfTextId { get; }

    /// <summary>
    /// The id padding positions hold. It never counts: the attention mask is 0 and the target −100 there. GPT-2 has no
    /// pad token and pads with end-of-text, as Hugging Face does; so do the byte-level tokenizers.
    /// </summary>
    int PadId { get; }

    /// <summary>Ids put before one sequence for a sequence-level task (BERT: [CLS]; GPT-style: none).</summary>
    IReadOnlyList<int> SequencePrefix { get; }

    /// <summary>Ids put after one sequence for a sequence-level task (BERT: [SEP]; GPT-style: none).</summary>
    IReadOnlyList<int> SequenceSuffix { get; }

    /// <summary>True when Decode(Encode(t)) = t for every valid Unicode text t.</summary>
    bool IsLossless { get; }

    /// <summary>The ids of a text, no special ids added.</summary>
    int[] Encode(string text);

    /// <summary>The text of ids; special ids decode to their written form (<c>&lt;|endoftext|&gt;</c>, [SEP]).</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id outside [0, <see cref="VocabSize"/>).</exception>
    string Decode(IReadOnlyList<int> ids);
}
