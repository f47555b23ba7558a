using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Precision;
using Research.Core.Tasks;
using Research.Core.Text;
using Research.Core.Training;
using static TorchSharp.torch;

namespace Research.Core.Probes;

/// <summary>
/// <c>[probes] captions</c> and <c>[probes] text</c>: what a model that writes text still knows beside its training loss.
/// <list type="bullet">
/// <item><c>caption_exact_match</c>, <c>caption_token_accuracy</c>, <c>caption_named</c> (a VLM): the class word generated for the first
/// <c>captions</c> test items of each task (<see cref="CaptionMetrics"/>), after each of a study's tasks (a probe row of T
/// values, one per task, and metrics <c>caption_exact_match/taskJ</c>) or at a single run's end (on its test split).</item>
/// <item><c>text_loss</c>, <c>text_loss_increase</c>: the language model alone — a VLM's, or the model itself — scored in
/// nats per token on the test split of another config's causal-LM text (its pre-training text), when the run starts and
/// after each phase; the increase is over the start, which is kept in <c>probes/text-start.safetensors</c> so that a
/// resumed run compares with the same start.</item>
/// </list>
/// </summary>
public sealed class LanguageProbesFactory : IRunObserverFactory
{
    public int Order => 11;

    public IEnumerable<ConfigError> Check(RunConfig config, RunKind kind, DataShape shape)
    {
        var p = config.Probes;
        if (p.Captions > 0 && (shape.Input != InputKind.ImagesAndTokens || config.Model.Kind != "vlm"))
            yield return new(config.File, "probes.captions", $"scores a vision-language model's captions (model.kind \"vlm\" on fashion-captions); this run's model is \"{config.Model.Kind}\" on \"{shape.Source}\"");
        if (p.Text.Length == 0) yield break;
        if (!shape.NextToken)
        {
            yield return new(config.File, "probes.text", $"scores a language model's text; this run's model (\"{config.Model.Kind}\" on \"{shape.Source}\") writes none");
            yield break;
        }
        var path = TextConfigPath(config);
        if (!File.Exists(path))
        {
            yield return new(config.File, "probes.text", $"\"{p.Text}\": no such config file ({path})");
            yield break;
        }
        RunConfig text;
        DataShape textShape;
        string? problem = null;
        try
        {
            text = ConfigLoader.Load(path);
            textShape = RunBuilder.Data(text).Shape();
            if (!textShape.NextToken || textShape.Input != InputKind.Tokens)
                problem = $"{path}'s data (\"{textShape.Source}\") is not causal-LM text (data.task = \"causal-lm\")";
            else if (textShape.Tokenizer != shape.Tokenizer || textShape.Vocabulary != shape.Vocabulary)
                problem = $"{path}'s text is tokenized by {textShape.Tokenizer} ({textShape.Vocabulary} ids); this run's by {shape.Tokenizer} ({shape.Vocabulary} ids)";
        }
        catch (ConfigException e) { problem = $"{path} is not a valid run config: {e.Message.Split('\n', 2)[0]}"; }
        if (problem is not null) yield return new(config.File, "probes.text", problem);
    }

    static string TextConfigPath(RunConfig c) =>
        Path.GetFullPath(c.Probes.Text, Path.GetDirectoryName(Path.GetFullPath(c.File))!);

    public IRunObserver? Create(RunComponents run)
    {
        var p = run.Config.Probes;
        if (p.Captions == 0 && p.Text.Length == 0) return null;
        TensorDataset? text = null;
        if (p.Text.Length > 0)
        {
            var config = ConfigLoader.Load(TextConfigPath(run.Config));
            using var splits = RunBuilder.Data(config).Load();
            text = splits.Test.Take(p.TextItems);
        }
        var tokenizer = p.Captions > 0 ? run.Data.Source.Tokenizer(run.Data.Request) : null;
        return new LanguageProbes(p.Captions, tokenizer, text, run.Config.Data.EvalBatchSize, run.Precision);
    }
}

/// <summary>The observer of <see cref="LanguageProbesFactory"/>.</summary>
sealed class LanguageProbes(int captions, ITextTokenizer? tokenizer, TensorDataset? text, int batchSize, PrecisionPolicy precision) : IRunObserver
{
    public const string CaptionExactMatch = "caption_exact_match", CaptionTokenAccuracy = "caption_token_accuracy", CaptionNamed = "caption_named", CaptionNamedNone = "caption_named_none",
        TextLoss = "text_loss", TextLossIncrease = "text_loss_increase";
    const string StartFile = "text-start.safetensors", StartKey = "text_loss";

    double _textStart = double.NaN;

    /// <summary>The language model that reads token ids: a VLM's, or the model itself.</summary>
    static nn.Module<Tensor, Tensor> LanguageModel(nn.Module<Tensor, Tensor> model) =>
        model is Vlm vlm ? (nn.Module<Tensor, Tensor>)vlm.LanguageModel : model;

    double Text(nn.Module<Tensor, Tensor> model) =>
        Evaluation.Run(LanguageModel(model), text!, batchSize, precision, new CausalLmTask()).Loss;

    public void RunStarted(IRunLoop loop, bool resumed)
    {
        if (text is null) return;
        var path = Path.Combine(loop.Layout.Probes, StartFile);
        if (File.Exists(path))
        {
            using var saved = Checkpoint.Load(loop.Layout.Probes, StartFile)[StartKey];
            _textStart = saved.item<double>();
            return;
        }
        if (resumed)
            throw new InvalidDataException($"{path} is missing: the text probe compares with the starting model, and a resumed run's model is no longer it (was [probes] text added to the config after the run started?)");
        _textStart = Text(loop.Run.Model);
        Directory.CreateDirectory(loop.Layout.Probes);
        using var value = tensor(_textStart, ScalarType.Float64);
        WeightFile.Save([(StartKey, value)], path);
        loop.Store.Metric(loop.RunId, loop.Step, TextLoss, _textStart);
        loop.Message($"text probe: the starting language model's loss {_textStart:F4} nats/token on {text.Count} windows");
    }

    public void TaskEnded(IRunLoop loop) => Measure(loop, study: true);

    public void TrainingEnded(IRunLoop loop) => Measure(loop, study: false);

    void Measure(IRunLoop loop, bool study)
    {
        var row = new Dictionary<string, double[]>();
        var said = new List<string>();
        if (captions > 0 && loop.Run.Model is Vlm vlm)
        {
            var tasks = loop.Run.Tasks;
            // A study scores every task's test items (the matrix's row); a single run its own test split.
            var scores = (study ? tasks : tasks.Take(1)).Select(t => CaptionMetrics.Score(vlm, t.Test, captions, tokenizer!, batchSize, precision)).ToList();
            for (int j = 0; j < scores.Count; j++)
            {
                var suffix = study ? $"/task{j}" : "";
                loop.Store.Metric(loop.RunId, loop.Step, CaptionExactMatch + suffix, scores[j].ExactMatch);
                loop.Store.Metric(loop.RunId, loop.Step, CaptionTokenAccuracy + suffix, scores[j].TokenAccuracy);
                loop.Store.Metric(loop.RunId, loop.Step, CaptionNamed + suffix, scores[j].Named);
                loop.Store.Metric(loop.RunId, loop.Step, CaptionNamedNone + suffix, (double)scores[j].NamedNone / scores[j].Items);
            }
            row[CaptionExactMatch] = scores.Select(s => s.ExactMatch).ToArray();
            row[CaptionNamed] = scores.Select(s => s.Named).ToArray();
            row[CaptionTokenAccuracy] = scores.Select(s => s.TokenAccuracy).ToArray();
            said.Add("caption exact match " + string.Join(" ", scores.Select((s, j) => $"{j}:{s.ExactMatch:F3}")) +
                     "  named " + string.Join(" ", scores.Select((s, j) => $"{j}:{s.Named:F3}")) +
                     "  token accuracy " + string.Join(" ", scores.Select((s, j) => $"{j}:{s.TokenAccuracy:F3}")));
        }
        if (text is not null)
        {
            var loss = Text(loop.Run.Model);
            loop.Store.Metric(loop.RunId, loop.Step, TextLoss, loss);
            loop.Store.Metric(loop.RunId, loop.Step, TextLossIncrease, loss - _textStart);
            row[TextLoss] = [loss];
            row[TextLossIncrease] = [loss - _textStart];
            said.Add($"text loss {loss:F4} (+{loss - _textStart:F4} over the start)");
        }
        if (said.Count == 0) return;
        loop.Message((study ? $"after task {loop.Phase}: " : "") + string.Join("  ", said));
        if (study) loop.AddProbes(loop.Phase, row);
    }

    public void Dispose() => text?.Dispose();
}
