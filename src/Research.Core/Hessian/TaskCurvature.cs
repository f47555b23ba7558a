using System.Text.Json;
using Research.Core.Checkpoints;
using Research.Core.Files;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Hessian;

/// <summary>
/// What a finished task j leaves for the forgetting decomposition of every later task: at θ_j, over a seeded draw of its
/// training items, the loss L_j, the gradient ∇L_j, the top-k eigenpairs of H_j (Lanczos), its trace (Hutchinson) and
/// the diagonal Fishers. Computed once, at task j's end, and kept in <c>hessian/task-j/</c> of the run, so the pairs of
/// later tasks (and a resumed or re-analysed run) read it instead of recomputing the spectrum.
/// </summary>
/// <remarks>Eigenvectors are stored as float32 (k × n): the overlaps (vᵢ·Δθ)² they enter need no more, and k × n float64
/// of a GPT would be gigabytes. The gradient and the Fishers are stored as float64.</remarks>
public sealed class TaskCurvature : IDisposable
{
    const string TensorsFile = "curvature.safetensors", SummaryFile = "curvature.json";

    public required int Task { get; init; }
    /// <summary>L_j(θ_j), the mean per-item loss over the drawn items.</summary>
    public required double Loss { get; init; }
    /// <summary>∇L_j(θ_j), flat (float64).</summary>
    public required Tensor Gradient { get; init; }
    /// <summary>λ₁ ≥ … ≥ λ_k.</summary>
    public required IReadOnlyList<double> Eigenvalues { get; init; }
    /// <summary>‖H vᵢ − λᵢ vᵢ‖ of each eigenpair.</summary>
    public required IReadOnlyList<double> Residuals { get; init; }
    /// <summary>Unit eigenvectors as the rows of a [k, n] float32 tensor.</summary>
    public required Tensor Eigenvectors { get; init; }
    public required bool Converged { get; init; }
    public required int Iterations { get; init; }
    /// <summary>Hutchinson's estimate of tr H_j and its standard error (NaN without probes).</summary>
    public required double Trace { get; init; }
    public required double TraceError { get; init; }
    /// <summary>The diagonal Fisher of each variant at θ_j on the same items, flat (float64), by variant name.</summary>
    public required IReadOnlyDictionary<string, Tensor> Fisher { get; init; }
    /// <summary>Items drawn, and the counted items (tokens for a language model) every mean divides by.</summary>
    public required long Samples { get; init; }
    public required long Items { get; init; }
    /// <summary>Curvature-vector products and seconds the task's end spent.</summary>
    public required long Products { get; init; }
    public required double Seconds { get; init; }
    /// <summary>What the curvature depends on besides the snapshot (samples, k, kind, precision, tolerance, …): a saved
    /// curvature computed with other settings is computed again, not reused.</summary>
    public required string Settings { get; init; }

    /// <summary>Writes the tensors and the summary to <paramref name="dir"/> (each through <see cref="OutputFile"/>).</summary>
    public void Save(string dir)
    {
        WeightFile.Save(new[] { ("gradient", Gradient), ("eigenvectors", Eigenvectors) }
            .Concat(Fisher.Select(f => ($"fisher/{f.Key}", f.Value))), Path.Combine(dir, TensorsFile));
        var summary = new Summary(Task, Loss, Eigenvalues.ToArray(), Residuals.ToArray(), Converged, Iterations, Trace, TraceError,
            Fisher.Keys.ToArray(), Samples, Items, Products, Seconds, Settings);
        OutputFile.WriteAllText(Path.Combine(dir, SummaryFile), JsonSerializer.Serialize(summary, Json));
    }

    /// <summary>The curvature a task end saved with these settings, or null when there is none (the summary is written
    /// last, so a folder without it was interrupted and is computed again) or it was computed with others.</summary>
    public static TaskCurvature? Load(string dir, string settings)
    {
        var summaryPath = Path.Combine(dir, SummaryFile);
        if (!File.Exists(summaryPath)) return null;
        InputFile.Require(summaryPath);
        var s = JsonSerializer.Deserialize<Summary>(File.ReadAllText(summaryPath), Json)
                ?? throw new InvalidDataException($"{summaryPath} is empty");
        if (s.Settings != settings) return null;
        var tensors = SafetensorsCheck.Load(Path.Combine(dir, TensorsFile));
        Tensor Take(string name) => tensors.Remove(name, out var t) ? t
            : throw new InvalidDataException($"{Path.Combine(dir, TensorsFile)} has no tensor '{name}'");
        try
        {
            return new TaskCurvature
            {
                Task = s.Task, Loss = s.Loss, Eigenvalues = s.Eigenvalues, Residuals = s.Residuals, Converged = s.Converged,
                Iterations = s.Iterations, Trace = s.Trace, TraceError = s.TraceError, Samples = s.Samples, Items = s.Items,
                Products = s.Products, Seconds = s.Seconds, Settings = s.Settings,
                Gradient = Take("gradient"), Eigenvectors = Take("eigenvectors"),
                Fisher = s.Fisher.ToDictionary(f => f, f => Take($"fisher/{f}")),
            };
        }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
    }

    public void Dispose()
    {
        Gradient.Dispose();
        Eigenvectors.Dispose();
        foreach (var f in Fisher.Values) f.Dispose();
    }

    // JSON has no NaN literal; a trace that was not estimated is NaN.
    static readonly JsonSerializerOptions Json = new()
    {
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        WriteIndented = true,
    };

    sealed record Summary(int Task, double Loss, double[] Eigenvalues, double[] Residuals, bool Converged, int Iterations,
        double Trace, double TraceError, string[] Fisher, long Samples, long Items, long Products, double Seconds, string Settings);
}
