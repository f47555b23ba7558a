using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Tracking;

namespace Research.Core.Training;

/// <summary>
/// A run's folder and store while it runs: made for a new run, or reopened for a resume (its store cut back to the
/// checkpoint's rows), with the TensorBoard mirror, the signal watch and the plugin watchdog. The run's end is recorded
/// once, whichever way it comes: returned, thrown, the watchdog, or a process exit.
/// </summary>
sealed class RunSession : IDisposable
{
    public required string RunId { get; init; }
    public required RunLayout Layout { get; init; }
    public required RunStore Store { get; init; }
    public Interruption Interruption { get; private set; } = null!;
    readonly List<IDisposable> _owned = [];
    RunLock? _lock;
    EventHandler? _onExit;
    int _ended;

    /// <summary>Opens the run's store: a new run folder, or the folder of <paramref name="resumeDir"/> at
    /// <paramref name="resume"/>'s checkpoint.</summary>
    public static RunSession Open(RunComponents run, string? resumeDir, (string Dir, CheckpointState State)? resume, ITrainingObserver observer)
    {
        RunSession session;
        RunLock? newRunLock = null;
        if (resume is { } r)
        {
            var layout = RunLayout.At(resumeDir!);
            // Asked on a read-only connection: a refused resume leaves the store as it was.
            string? status;
            using (var reader = RunStore.OpenReadOnly(layout.Store)) status = reader.Status(r.State.RunId);
            if (status is null)
                throw new InvalidDataException($"{Path.Combine(r.Dir, Checkpoint.State)}: run {r.State.RunId} is not in {layout.Store}; it does not describe this run (refusing to resume from it)");
            if (status == "finished")
                throw new InvalidDataException($"--resume {layout.Root}: run {r.State.RunId} already finished; nothing to resume");
            session = new RunSession { RunId = r.State.RunId, Layout = layout, Store = new RunStore(layout.Store) };
            var stops = r.State.StopReasons;
            session.Store.ResumeRun(session.RunId, (r.State.MetricRows, r.State.EvaluationRows), r.State.Study?.Rows.Count ?? 0,
                stops.Count == 0 ? null : Trainer.StopText(stops, run.Kind == RunKind.Study));
        }
        else
        {
            var (runId, runDir, store) = RunBuilder.StartRun(run, RunStreams.Names(run));
            session = new RunSession { RunId = runId, Layout = RunLayout.At(runDir), Store = store };
        }
        // From here the store says the run is running: whatever fails before the loop takes over (the lock, an unwritable
        // TensorBoard folder) is recorded as the run's failure, with its reason.
        try
        {
            if (resume is null) newRunLock = RunLock.Acquire(session.Layout.Root);
            session.Start(run, resume?.State, observer, newRunLock);
        }
        catch (Exception e)
        {
            newRunLock?.Dispose();
            try { session.End("failed", e.Message); }
            catch (RunStoreException storeError) { observer.Message($"warning: {storeError.Message}"); }
            session.Dispose();
            throw;
        }
        return session;
    }

    void Start(RunComponents run, CheckpointState? resume, ITrainingObserver observer, RunLock? runLock)
    {
        _lock = runLock;
        Store.Warn = observer.Failed;
        // The TensorBoard view of what the store records; a resumed run's file drops what came after its checkpoint, as
        // the store has just done.
        var dir = run.Config.Run.TensorboardDir;
        TensorBoardWriter board;
        try { board = TensorBoardWriter.Open(string.IsNullOrEmpty(dir) ? Layout.Root : Path.GetFullPath(dir), resume is { } at ? at.Step + 1 : null); }
        catch (Exception e) when (!string.IsNullOrEmpty(dir) && e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(run.Config.File, "run.tensorboard_dir", $"\"{dir}\" cannot be written: {e.Message}");
        }
        _owned.Add(board);
        Store.Mirror(board);
        Interruption = Interruption.Watch(observer.Message);
        _owned.Add(Interruption);
        // Started after the signal watch, which it reads; ended first on the way out (the list is disposed in reverse).
        _owned.Add(Watchdog.Start(run.Config.Plugins.CallTimeoutS, Interruption,
            expired: message => Exit("failed", message, $"run failed: {message}", 1),
            stopped: (signal, message) =>
            {
                message += $"; resume continues from the last checkpoint: --resume {Layout.Root}";
                Exit("interrupted", message, message, Interruption.ExitCode(signal));
            }));
        // A plugin that calls Environment.Exit (or a second signal) ends the process without unwinding the loop: the
        // buffered rows are flushed and the run recorded as failed (or interrupted) before it goes. An end already recorded
        // (the watchdog's, which exits this way too) stays, with its own line.
        _onExit = (_, _) =>
        {
            if (Volatile.Read(ref _ended) == 1) return;
            try
            {
                if (Interruption.Requested is { } signal) End("interrupted", $"stopped by a second {signal} before a checkpoint was written");
                else
                {
                    var why = $"the process exited during the run (exit code {Environment.ExitCode}; a plugin called Environment.Exit?)";
                    End("failed", why);
                    // The exit code is the one the plugin passed; .NET gives no way to change it from here.
                    observer.Failed($"run failed: {why}");
                }
            }
            catch (Exception) { }   // nothing can be reported from here
        };
        AppDomain.CurrentDomain.ProcessExit += _onExit;
        Store.Heartbeat(RunId);

        // From the watchdog's thread, while the training thread is still inside a plugin call: the line, the run's end in
        // the store, then the exit code.
        void Exit(string status, string message, string line, int exitCode)
        {
            observer.Failed(line);
            try { End(status, message); }
            finally { Environment.Exit(exitCode); }
        }
    }

    /// <summary>Records the run's end, the first time only.</summary>
    public void End(string status, string? error)
    {
        if (Interlocked.Exchange(ref _ended, 1) == 0) Store.EndRun(RunId, status, error);
    }

    public void Dispose()
    {
        if (_onExit is not null) AppDomain.CurrentDomain.ProcessExit -= _onExit;
        // In reverse: the watchdog and the signal watch stop before the store closes, and the lock goes last.
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        Store.Dispose();
        _lock?.Dispose();
    }
}
