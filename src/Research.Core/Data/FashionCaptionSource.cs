using Research.Abstractions;
using Research.Core.Text;
using static TorchSharp.torch;

namespace Research.Core.Data;

/// <summary>[data] keys of <c>fashion-captions</c>, named apart from other sources' (as the file formats' are), so that
/// no key changes which sources own it.</summary>
public sealed record FashionCaptionOptions
{
    /// <summary>Folder of Fashion-MNIST's four gzipped IDX files, as for <c>fashion-mnist</c> (empty: <c>$FASHION_MNIST_DIR</c>,
    /// then the Debian package's folder).</summary>
    public string ImagesPath { get; init; } = "";
    /// <summary>The tokenizer of the captions (a language model loaded by <c>language_model_init_from</c> must have been
    /// trained with the same one).</summary>
    [Option(OneOf = ["bytes", "gpt2"])]
    public string TextTokenizer { get; init; } = "bytes";
    /// <summary>T, the tokens of a caption row: the begin id, the caption, the end id, then padding.</summary>
    [Option(Min = 4, Max = 4096)]
    public int MaxTokens { get; init; } = 64;
    /// <summary>The last K phrasings are the test split's only (the training split never sees them).</summary>
    [Option(Min = 1, Max = 4)]
    public int HeldOutPhrasings { get; init; } = 2;
}

/// <summary>
/// <c>fashion-captions</c>: each Fashion-MNIST image with a templated English caption of its class ("a photo of an ankle
/// boot", "this is a dark sandal"), the phrasing and the adjective drawn per item from (seed, "captions/train") or
/// (seed, "captions/test"); the last <c>held_out_phrasings</c> phrasings appear in the test split only. Items:
/// <c>image</c> [N, 1, 28, 28] (standardised as <c>fashion-mnist</c>'s features), <c>input_ids</c> and <c>targets</c>
/// [N, T] (the begin id, the caption, the end id; targets −100 on padding), <c>labels</c> [N] (the class, which
/// <c>data.classes</c> and the class-split studies select by), and <c>word_start</c>, <c>word_end</c> [N] (the class
/// word's token positions in the row, which the caption metrics score).
/// </summary>
public sealed class FashionCaptionSource : DataSource<FashionCaptionOptions>
{
    public override string Name => "fashion-captions";
    public override string Summary => "Fashion-MNIST images with templated English captions of their classes (held-out phrasings in the test split), for kind vlm";
    public override IReadOnlyList<string> Streams => ["captions/train", "captions/test"];

    /// <summary>The tensor of each item's class word's first token position in its row.</summary>
    public const string WordStart = "word_start";
    /// <summary>The tensor of each item's class word's end (exclusive) in its row.</summary>
    public const string WordEnd = "word_end";

    /// <summary>The class words, by label (Fashion-MNIST's names as a caption says them).</summary>
    public static IReadOnlyList<string> ClassWords { get; } =
        ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

    /// <summary>The phrasings: {a} is the article the next word takes, {adj} an adjective, {w} the class word. The last
    /// ones are held out for the test split (<c>held_out_phrasings</c>).</summary>
    public static IReadOnlyList<string> Phrasings { get; } =
    [
        "a photo of {a} {w}", "a picture of {a} {adj} {w}", "this is {a} {adj} {w}", "here is {a} {w}",
        "an image of {a} {w} on a plain background", "{a} {adj} {w}, seen from the front",
        "look, {a} {adj} {w}", "a small grey photo showing {a} {w}", "someone sells {a} {adj} {w}", "it is {a} {w}",
    ];

    /// <summary>The adjectives {adj} draws from.</summary>
    public static IReadOnlyList<string> Adjectives { get; } = ["grey", "dark", "light", "plain", "old", "new"];

    /// <summary>The caption of a class, a phrasing and an adjective, split around the class word: (before, word, after).</summary>
    public static (string Before, string Word, string After) Caption(int label, int phrasing, int adjective)
    {
        var template = Phrasings[phrasing];
        var at = template.IndexOf("{w}", StringComparison.Ordinal);
        var before = template[..at].Replace("{adj}", Adjectives[adjective]).TrimEnd();
        var word = ClassWords[label];
        // The article agrees with the word after it: the adjective when there is one, else the class word.
        var next = before.EndsWith("{a}", StringComparison.Ordinal) ? word : before[(before.IndexOf("{a}", StringComparison.Ordinal) + 4)..];
        before = before.Replace("{a}", "aeiou".Contains(next[0]) ? "an" : "a");
        return (before, word, template[(at + 3)..]);
    }

    protected override IEnumerable<OptionError> Validate(DataKeys data, FashionCaptionOptions o)
    {
        // The core checks data.classes against a classifier's classes only; these items' targets are tokens.
        if (data.Classes.FirstOrDefault(c => c < 0 || c >= ClassWords.Count, -1) is var bad and >= 0)
            yield return new("data.classes", $"names class {bad}; the captions are of Fashion-MNIST's classes 0–{ClassWords.Count - 1}");
    }

    public override IEnumerable<OptionError> Check(DataRequest request)
    {
        var o = OptionsOf(request);
        var tokenizer = Tokenizer(request)!;
        var longest = Enumerable.Range(0, ClassWords.Count)
            .SelectMany(l => Enumerable.Range(0, Phrasings.Count).SelectMany(p => Enumerable.Range(0, Adjectives.Count).Select(a => Ids(tokenizer, Caption(l, p, a)).Ids.Length)))
            .Max();
        if (longest > o.MaxTokens) yield return new("data.max_tokens", $"{o.MaxTokens} is shorter than the longest caption row ({longest} tokens of {tokenizer.Name} with the begin and end ids)");
    }

    public override IEnumerable<OptionError> StudyErrors(DataRequest request, string benchmark)
    {
        if (benchmark != "split-class")
            yield return new("study.benchmark", $"\"{benchmark}\" is not made from captions: use \"split-class\" (the classes' captions in turn)");
    }

    public override DataShape Shape(DataRequest request)
    {
        var o = OptionsOf(request);
        var vocabulary = TextTokenizers.VocabularySize(o.TextTokenizer);
        return new DataShape(Name, InputKind.ImagesAndTokens, o.MaxTokens, ClassWords.Count)
        { NextToken = true, ImageSide = FashionMnist.Side, Tokenizer = o.TextTokenizer, Vocabulary = vocabulary };
    }

    public override ITextTokenizer? Tokenizer(DataRequest request) =>
        TextTokenizers.Build(OptionsOf(request).TextTokenizer, () => [], (model, file) => request.PublishedFile(model, file));

    public override DataSplits Load(DataRequest request)
    {
        var o = OptionsOf(request);
        var tokenizer = Tokenizer(request)!;
        var (train, test) = FashionMnist.Load(FashionMnist.ResolveDirectory(o.ImagesPath));
        using (train)
        using (test)
        {
            var trained = Phrasings.Count - o.HeldOutPhrasings;
            using var trainStream = request.Stream("captions/train");
            using var testStream = request.Stream("captions/test");
            return new DataSplits(Items(train, tokenizer, o.MaxTokens, 0, trained, trainStream), Items(test, tokenizer, o.MaxTokens, trained, Phrasings.Count, testStream));
        }
    }

    /// <summary>A 28×28 grey image file (PNG or JPEG; colour is turned grey) as an item's <c>image</c> [1, 1, 28, 28],
    /// standardised as the dataset's images are; the message of a file that is not one names it.</summary>
    public static Tensor ReadImage(string file)
    {
        Files.InputFile.Require(file);
        StbImageSharp.ImageResult image;
        try { image = StbImageSharp.ImageResult.FromMemory(File.ReadAllBytes(file), StbImageSharp.ColorComponents.Grey); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{file}: not an image StbImageSharp can decode ({e.Message.Split('\n', 2)[0].TrimEnd()})");
        }
        if (image?.Data is null) throw new InvalidDataException($"{file}: not an image StbImageSharp can decode");
        if (image.Width != FashionMnist.Side || image.Height != FashionMnist.Side)
            throw new InvalidDataException($"{file}: {image.Width}×{image.Height} pixels; the captions' images are {FashionMnist.Side}×{FashionMnist.Side}");
        using var scope = NewDisposeScope();
        return tensor(image.Data, [1, 1, FashionMnist.Side, FashionMnist.Side], ScalarType.Byte).to_type(ScalarType.Float32)
            .div_(255f).sub_(FashionMnist.PixelMean).div_(FashionMnist.PixelStd).MoveToOuterDisposeScope();
    }

    /// <summary>A caption's row ids (begin id, caption, end id) and its class word's span.</summary>
    static (long[] Ids, int WordStart, int WordEnd) Ids(ITextTokenizer tokenizer, (string Before, string Word, string After) caption)
    {
        // Encoded in pieces at word boundaries, the space going with the word after it as byte-level BPE pre-tokenises, so
        // the class word's tokens are the same in every phrasing.
        var before = tokenizer.Encode(caption.Before);
        var word = tokenizer.Encode((caption.Before.Length > 0 ? " " : "") + caption.Word);
        var after = tokenizer.Encode(caption.After);
        var ids = new List<long>(before.Length + word.Length + after.Length + 2) { tokenizer.EndOfTextId };
        ids.AddRange(before.Select(i => (long)i));
        var start = ids.Count;
        ids.AddRange(word.Select(i => (long)i));
        var end = ids.Count;
        ids.AddRange(after.Select(i => (long)i));
        ids.Add(tokenizer.EndOfTextId);
        return (ids.ToArray(), start, end);
    }

    /// <summary>The caption items of labelled images (<c>input</c> [N, 784], <c>targets</c> [N]) for one split: each item's
    /// phrasing drawn uniformly from phrasings [first, last), its adjective from all, both from <paramref name="stream"/>.</summary>
    public static Batch Items(TensorDataset images, ITextTokenizer tokenizer, int context, int first, int last, Generator stream)
    {
        var n = images.Count;
        using var phrasingDraw = randint(first, last, [n], generator: stream);
        using var adjectiveDraw = randint(0, Adjectives.Count, [n], generator: stream);
        var labels = images.Targets.data<long>().ToArray();
        var phrasings = phrasingDraw.data<long>().ToArray();
        var adjectives = adjectiveDraw.data<long>().ToArray();
        var ids = new long[n * context];
        var targets = new long[n * context];
        var starts = new long[n];
        var ends = new long[n];
        for (long i = 0; i < n; i++)
        {
            var (row, start, end) = Ids(tokenizer, Caption((int)labels[i], (int)phrasings[i], (int)adjectives[i]));
            for (int t = 0; t < context; t++)
            {
                ids[i * context + t] = t < row.Length ? row[t] : tokenizer.PadId;
                targets[i * context + t] = t < row.Length ? row[t] : Batch.IgnoreIndex;
            }
            (starts[i], ends[i]) = (start, end);
        }
        return new Batch([
            new(Batch.Image, images.Inputs.view(n, 1, FashionMnist.Side, FashionMnist.Side).clone()),
            new(Batch.InputIds, tensor(ids, [n, context])),
            new(Batch.Targets, tensor(targets, [n, context])),
            new(TensorDataset.Labels, images.Targets.clone()),
            new(WordStart, tensor(starts)),
            new(WordEnd, tensor(ends)),
        ]);
    }
}
