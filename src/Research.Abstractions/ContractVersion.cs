namespace Research.Abstractions;

/// <summary>
/// The version of this contract. It equals the assembly version of <c>Research.Abstractions</c>, which is
/// what a compiled plugin records as its reference; the host compares that record with its own version.
/// A plugin is accepted when its major version equals the host's and its minor version is not newer
/// (semantic versioning: minor versions only add members).
/// </summary>
/// <remarks>
/// 2.0 (breaking, from 1.1): batches are named tensors (<see cref="Batch"/>); <c>IRegularizer</c> is split into the
/// method roles <see cref="IPenalty"/>, <see cref="ILossTerm"/>, <see cref="IStepObserver"/>, <see cref="IGradientHook"/>,
/// <see cref="ITaskHooks"/>, <see cref="IDataRole"/> and <see cref="IStateful"/>; <c>Consolidate(TaskContext)</c> is
/// <see cref="ITaskHooks.TaskEnd"/> with <see cref="TaskEndContext.IsLastTask"/>; the step context separates the
/// task-loss gradient from the total. 1.x plugins are refused with the version they were built against.
/// <para>2.2 (adds): <see cref="OptionAttribute.Aliases"/>, <see cref="PluginAttribute.Aliases"/> and
/// <see cref="KeyAdviceAttribute"/>, so a plugin can take another library's names where they mean the same and refuse
/// them with advice where they do not.</para>
/// <para>2.3 (adds): <see cref="OptionAttribute.AddedIn"/> and <see cref="OptionAttribute.PartOfIdentity"/>, so an
/// option declares how it counts in a run's identity: an option added later is left out at its default (stored runs keep
/// their identity), and one that does not change what a run computes is left out always.</para>
/// <para>3.0 (breaking, from 2.3): data sources (<see cref="IDataSource"/>, <see cref="DataSource{TOptions}"/>) and model
/// kinds (<see cref="ModelKind{TOptions}"/>) are plugin roles, written as the built-in ones are, with the types they need
/// (<see cref="DataShape"/>, <see cref="DataSplits"/> of <see cref="Batch"/>es, <see cref="DataRequest"/>,
/// <see cref="ITextTokenizer"/>, <see cref="ModelContext"/>, <see cref="IBatchModule"/>, <see cref="TransformerShape"/>).
/// 2.x plugins are refused with the version they were built against. The design: docs/contract-3.md.</para>
/// </remarks>
public static class ContractVersion
{
    /// <summary>Incremented on any breaking change to an interface or record of the contract.</summary>
    public const int Major = 3;

    /// <summary>Incremented when members are added without breaking existing plugins.</summary>
    public const int Minor = 0;
}
