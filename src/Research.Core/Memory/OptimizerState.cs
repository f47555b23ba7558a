namespace Research.Core.Memory;

/// <summary>
/// The per-parameter state an optimizer keeps between steps, always in fp32 (ZeRO's accounting, also what
/// mixed-precision trainers do: moments in 16 bits underflow).
/// </summary>
/// <param name="Name">The canonical name the command line accepts.</param>
/// <param name="BytesPerParameter">Bytes of state per parameter.</param>
/// <param name="Slots">What the state is, as printed ("m and v").</param>
public sealed record OptimizerState(string Name, int BytesPerParameter, string Slots)
{
    /// <summary>Adam and AdamW: first and second moments m and v, 4 + 4 bytes (decoupled decay adds no state).</summary>
    public static readonly OptimizerState Adam = new("adamw", 8, "m and v");

    /// <summary>SGD with momentum: one momentum buffer, 4 bytes.</summary>
    public static readonly OptimizerState SgdMomentum = new("sgd-momentum", 4, "momentum buffer");

    /// <summary>Plain SGD: the update is −η·g, nothing is kept.</summary>
    public static readonly OptimizerState Sgd = new("sgd", 0, "no state");

    /// <summary>Every optimizer by every name it is accepted under: "adam" and "adamw" keep the same state.</summary>
    public static IReadOnlyDictionary<string, OptimizerState> ByName { get; } = new Dictionary<string, OptimizerState>(StringComparer.OrdinalIgnoreCase)
    {
        ["adamw"] = Adam, ["adam"] = Adam,
        ["sgd-momentum"] = SgdMomentum,
        ["sgd"] = Sgd,
    };
}
