using Research.Core.Config;
using Research.Core.Models;
using Research.Core.Models.Kinds;
using Research.Core.Text;

namespace Research.Core.Training;

/// <summary>
/// A run rebuilt around one of its own checkpoints (<c>eval</c>, <c>generate</c>, <c>export</c> set <c>model.init_from</c>
/// to the checkpoint): a checkpoint holds weights only, so what the run read beside its original <c>init_from</c> — a
/// Hugging Face folder's tokenizer.json and a Llama's config.json — would be lost with it. These overrides keep it.
/// </summary>
public static class CheckpointRebuild
{
    /// <summary>
    /// The overrides that keep what <paramref name="original"/> read beside its <c>init_from</c>: the tokenizer.json its text
    /// was tokenized with (<c>tokenizer = "tokenizer.json"</c>; the shape names the file) as <c>data.tokenizer_file</c>, and
    /// a Llama's config.json shape as [model] keys (<see cref="LlamaKind.Overrides"/>); and no <c>probes.text</c>. Empty for
    /// any other run.
    /// </summary>
    public static IReadOnlyList<string> Overrides(RunConfig original)
    {
        var overrides = new List<string>();
        if (TokenizerJson(original) is { } json) overrides.Add($"data.tokenizer_file='{json}'");
        // A rebuilt run scores no probes, and the text probe's config path is relative to where the run's config was.
        if (original.Probes.Text.Length > 0) overrides.Add("probes.text=''");
        if (original.Model.Kind == "llama" && ModelFactory.PublishedName(original.Model.InitFrom) is null
            && LlamaConfig.ConfigFileFor(ModelFactory.InitPath(original.Model, original.File)) is { } hf)
            overrides.AddRange(LlamaKind.Overrides(LlamaConfig.Read(hf), hf));
        return overrides;
    }

    /// <summary>The tokenizer.json a config's text is tokenized with (the shape names its full path), or null for another tokenizer.</summary>
    public static string? TokenizerJson(RunConfig config) =>
        RunBuilder.Shape(config) is { IsText: true, Tokenizer: var t } && Path.IsPathRooted(t) && Path.GetFileName(t) == TextTokenizers.HfJson ? t : null;
}
