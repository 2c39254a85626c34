"""Progress of a script's run: the jobs it starts continue one count, however deep they nest (a script's job whose
own script generates again, as face-fixing extensions do inside an X/Y/Z plot)."""
from modules.generation.progress import GenerationState


def test_nested_jobs_continue_the_outer_count_and_keep_an_interrupt():
    state = GenerationState(console=False)
    state.begin(1, text="txt2img")  # the script's run
    state.set_job_count(2)  # it says: two cells
    for _cell in range(2):
        state.begin(3)  # a cell: three batches
        for batch in range(3):
            state.begin_pass(1, job_no=batch)
            state.begin(1)  # a job inside the batch (an extension's process_images)
            state.begin_pass(1, job_no=0)
            state.end()
        state.end()
        assert state.job_no <= state.job_count
    snapshot = state.snapshot()
    assert snapshot.active and snapshot.progress <= 1.0
    state.interrupt()
    state.begin(1)  # a job begun inside the run does not clear the user's interrupt
    assert state.interrupted
    state.end()
    state.end()
    assert not state.snapshot().active
    state.begin(1)  # the next request starts afresh
    assert not state.interrupted
    state.end()
