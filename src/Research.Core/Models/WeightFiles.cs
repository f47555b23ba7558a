using Research.Abstractions;
using Research.Core.Checkpoints;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>The core's weight files by parameter name, as every kind's default load and save use them.</summary>
public sealed class WeightFiles : IWeightFiles
{
    public static readonly WeightFiles Instance = new();

    /// <summary>Loads by this framework's parameter names (strict or not, <c>reinit</c> prefixes may be absent); an ONNX
    /// file is refused unless the kind reads one.</summary>
    public string LoadByName(nn.Module<Tensor, Tensor> model, ModelContext context)
    {
        var path = context.InitPath;
        if (path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"init_from {path}: an ONNX file is read by kind {string.Join(" or ", ModelKinds.All.Where(k => k.ReadsOnnx).Select(k => k.Name))}, not by {context.Model.Kind}");
        var loaded = WeightFile.Load(model, path, context.Model.Strict, context.Model.Reinit.ToArray());
        var summary = $"init_from {path}: loaded {loaded.Loaded.Count} tensors";
        if (!loaded.IsComplete)
            summary += $"; missing: [{string.Join(", ", loaded.Missing)}]; unexpected: [{string.Join(", ", loaded.Unexpected)}]" +
                       (loaded.ShapeMismatch.Count > 0 ? $"; shape mismatch: [{string.Join(", ", loaded.ShapeMismatch)}]" : "");
        return summary;
    }

    public void SaveByName(nn.Module<Tensor, Tensor> model, string path) => WeightFile.Save(model, path);
}
