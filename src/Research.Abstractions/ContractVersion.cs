namespace Research.Abstractions;

/// <summary>
/// The version of this contract. It equals the assembly version of <c>Research.Abstractions</c>, which is
/// what a compiled plugin records as its reference; the host compares that record with its own version.
/// A plugin is accepted when its major version equals the host's and its minor version is not newer
/// (semantic versioning: minor versions only add members).
/// </summary>
public static class ContractVersion
{
    /// <summary>Incremented on any breaking change to an interface or record of the contract.</summary>
    public const int Major = 1;

    /// <summary>Incremented when members are added without breaking existing plugins.
    /// 1.1: <see cref="TaskContext.Fisher"/> and <see cref="FisherKind"/>.</summary>
    public const int Minor = 1;
}
