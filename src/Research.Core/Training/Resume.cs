using Research.Core.Checkpoints;
using Research.Core.Config;
using TorchSharp;

namespace Research.Core.Training;

/// <summary>Where a run resumes: its newest checkpoint that verifies and describes this run.</summary>
static class Resume
{
    /// <summary>The newest checkpoint that verifies (corrupt ones are reported and skipped), for this config only.</summary>
    public static (string Dir, CheckpointState State) Point(RunComponents run, string resumeDir, Action<string> message)
    {
        var checkpoints = Research.Core.Tracking.RunLayout.At(resumeDir).Checkpoints;
        Checkpoint.Tidy(checkpoints, message);
        var found = Checkpoint.LatestValid(checkpoints, message)
                    ?? throw new InvalidDataException($"--resume {resumeDir}: no valid checkpoint in {checkpoints}");
        CheckPosition(run, found.Dir, found.State);
        if (found.State.Identity != run.Identity)
            throw new ConfigException(run.Config.File, "(config)",
                $"differs from the config of the run being resumed ({resumeDir}/config.toml; identity {Prefix(found.State.Identity)}…, this config {Prefix(run.Identity)}…); resume with that config");
        if (found.State.Threads != torch.get_num_threads())
            message($"warning: the run was checkpointed with {found.State.Threads} threads and resumes with {torch.get_num_threads()}: " +
                             "results may differ in the last bits from an uninterrupted run (set [run] threads)");
        return found;
    }

    /// <summary>The first 12 characters of an identity (a state file edited by hand may hold a shorter one, or none).</summary>
    static string Prefix(string? identity) => identity is null ? "(none)" : identity.Length > 12 ? identity[..12] : identity;

    /// <summary>
    /// A checkpoint's position must lie inside the run it claims to continue: its manifest proves the files are the ones
    /// written together, not that they describe this run (a state.json edited with its manifest, or copied from another
    /// run). A position outside would make the loop believe the run finished, or index past its tasks.
    /// </summary>
    static void CheckPosition(RunComponents run, string dir, CheckpointState s)
    {
        var file = Path.Combine(dir, Checkpoint.State);
        void Require(bool ok, string what)
        {
            if (!ok) throw new InvalidDataException($"{file}: {what}; it does not describe this run (refusing to resume from it)");
        }
        int tasks = run.Tasks.Count;
        Require(s.Phase >= 0 && s.Phase < tasks, $"phase {s.Phase} is outside the run's {tasks} phase(s)");
        Require(Enum.IsDefined(s.Stage) && (run.Kind == RunKind.Study || s.Stage != Stage.Consolidated), $"stage {s.Stage} is not a stage of this kind of run");
        Require(s.Epoch >= 0 && s.Epoch <= run.EpochsOf(s.Phase), $"epoch {s.Epoch} is outside [0, {run.EpochsOf(s.Phase)}]");
        long windows = run.Tasks[s.Phase].Train.WindowsPerEpoch(run.Config.Data.BatchSize, run.Config.Train.GradAccum);
        Require(s.WindowInEpoch >= 0 && s.WindowInEpoch <= windows, $"window {s.WindowInEpoch} is outside the epoch's {windows}");
        Require(s.OptimizerStep >= 0 && s.Step >= s.OptimizerStep && s.PhaseStartStep >= 0 && s.PhaseStartStep <= s.Step && s.Step <= run.TotalSteps,
            $"steps (run {s.Step}, optimizer {s.OptimizerStep}, phase start {s.PhaseStartStep}) are inconsistent or beyond the run's {run.TotalSteps}");
        int rows = s.Study?.Rows.Count ?? 0;
        int expected = s.Stage == Stage.Training || s.Stage == Stage.Trained ? s.Phase : s.Phase + 1;
        Require(run.Kind != RunKind.Study || rows == expected, $"holds {rows} rows of the study's matrices, where phase {s.Phase} at stage {s.Stage} has {expected}");
    }

}
