namespace Research.Abstractions;

/// <summary>
/// Declares the values an option accepts, once: the host's binder checks them before anything is created on disk,
/// <c>research config schema</c> prints them, and the fuzz tests generate values on both sides of them. Rules that
/// relate two options (a start before an end) stay in <see cref="IValidatable.Validate"/>.
/// </summary>
/// <example><code>
/// [Option(Min = 0, MinExclusive = true)] public double Lambda { get; init; } = 1.0;   // λ &gt; 0
/// [Option(OneOf = ["reservoir", "class-balanced"])] public string Policy { get; init; } = "reservoir";
/// </code></example>
/// <remarks>
/// Bounds apply to numbers and to every element of an array of numbers; they are inclusive unless marked exclusive.
/// Numbers are always finite (TOML's nan and ±inf are refused for every option, declared or not).
/// </remarks>
[AttributeUsage(AttributeTargets.Property, AllowMultiple = false, Inherited = true)]
public sealed class OptionAttribute : Attribute
{
    /// <summary>The smallest value allowed; NaN: no lower bound.</summary>
    public double Min { get; set; } = double.NaN;

    /// <summary>The largest value allowed; NaN: no upper bound.</summary>
    public double Max { get; set; } = double.NaN;

    /// <summary>The value must be strictly greater than <see cref="Min"/>.</summary>
    public bool MinExclusive { get; set; }

    /// <summary>The value must be strictly smaller than <see cref="Max"/>.</summary>
    public bool MaxExclusive { get; set; }

    /// <summary>A string option (or each string of an array) must be one of these.</summary>
    public string[] OneOf { get; set; } = [];

    /// <summary>A string option (or each string of an array) must be a valid .NET regular expression.</summary>
    public bool Regex { get; set; }

    /// <summary>The longest a string may be, in characters; 0: no limit.</summary>
    public int MaxLength { get; set; }

    /// <summary>Other keys that mean exactly this option, such as another library's name for it (Hugging Face's
    /// <c>num_warmup_steps</c> for <c>warmup_steps</c>). A config may use either; giving both is refused, and the run
    /// records the option under its own key, so both spellings make the same run. (Contract 2.2.)</summary>
    public string[] Aliases { get; set; } = [];

    /// <summary>The version in which the option appeared: the plugin's own, or the contract's for the host's sections and
    /// built-in plugins (<c>"2.2"</c>); empty: there from the start. A run stored before the option existed computed what
    /// its default computes, so at its default the option is left out of a run's identity: such a run keeps its identity,
    /// resumes, and is still found by a sweep. Give an option added later the default that does what the plugin did
    /// before it. (Contract 2.3.)</summary>
    public string AddedIn { get; set; } = "";

    /// <summary>Whether the option is part of what a run computes, and so of its identity (the default). False for an
    /// option that says only where or how a run executes, or what is analysed without changing a weight: runs that
    /// differ in it alone are the same run, so a sweep does not rerun them and a resume does not refuse them.
    /// (Contract 2.3.)</summary>
    public bool PartOfIdentity { get; set; } = true;
}

/// <summary>
/// A key an options type does not take but that users bring from another library, with what to write instead. The
/// binder refuses the key with this advice in place of the plain "unknown key" (Hugging Face's absolute
/// <c>lr_end</c> against this library's <c>end_ratio</c>, say): a key whose meaning differs is never taken silently.
/// Inherited by derived options types. (Contract 2.2.)
/// </summary>
/// <example><code>
/// [KeyAdvice("lr_end", "is an absolute learning rate in Hugging Face; here give end_ratio = lr_end / lr")]
/// public sealed record PolynomialOptions : WarmupOptions { ... }
/// </code></example>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = true)]
public sealed class KeyAdviceAttribute(string key, string advice) : Attribute
{
    /// <summary>The key as the user would write it.</summary>
    public string Key { get; } = key;

    /// <summary>What to do instead, completing "KEY: …" in the error.</summary>
    public string Advice { get; } = advice;
}
