// Cost of the gradient exchange of data-parallel training, without the training: the CLI's fixed-order sum
// (MPI_Alltoall of chunks, add in rank order, MPI_Allgather; Sources/peftkit-cli/Distributed.swift) against
// MPI_Allreduce, on a buffer of P floats (default 460800 = SmolLM2-135M LoRA r8 on q_proj,v_proj).
//   mpicc -O2 -o /tmp/xbench scripts/mpi_exchange_bench.c
//   mpirun -np 2 /tmp/xbench [P] [iterations]
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fixed_order(float *g, int P, float *scratch, float *recv, float *mine, int size, int rank) {
    int chunk = (P + size - 1) / size;
    memcpy(scratch, g, sizeof(float) * P);
    memset(scratch + P, 0, sizeof(float) * (chunk * size - P));
    MPI_Alltoall(scratch, chunk, MPI_FLOAT, recv, chunk, MPI_FLOAT, MPI_COMM_WORLD);
    for (int i = 0; i < chunk; i++) mine[i] = recv[i];
    for (int j = 1; j < size; j++)
        for (int i = 0; i < chunk; i++) mine[i] += recv[j * chunk + i];
    MPI_Allgather(mine, chunk, MPI_FLOAT, scratch, chunk, MPI_FLOAT, MPI_COMM_WORLD);
    memcpy(g, scratch, sizeof(float) * P);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int size, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int P = argc > 1 ? atoi(argv[1]) : 460800, iters = argc > 2 ? atoi(argv[2]) : 200;
    int chunk = (P + size - 1) / size;
    float *g = malloc(sizeof(float) * P), *scratch = malloc(sizeof(float) * chunk * size),
          *recv = malloc(sizeof(float) * chunk * size), *mine = malloc(sizeof(float) * chunk);
    for (int i = 0; i < P; i++) g[i] = (float)((i * 2654435761u + rank) % 1000) * 1e-6f;
    for (int pass = 0; pass < 2; pass++) {
        for (int method = 0; method < 2; method++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (int k = 0; k < iters; k++) {
                if (method == 0) fixed_order(g, P, scratch, recv, mine, size, rank);
                else MPI_Allreduce(MPI_IN_PLACE, g, P, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                for (int i = 0; i < P; i++) g[i] *= 1.0f / size;   // keep values bounded
            }
            double dt = (MPI_Wtime() - t0) / iters;
            if (rank == 0 && pass == 1)
                printf("%d ranks, %d floats (%.2f MB): %-34s %.3f ms per exchange\n", size, P, 4.0 * P / 1e6,
                       method == 0 ? "fixed order (Alltoall+add+Allgather)" : "MPI_Allreduce", dt * 1e3);
        }
    }
    MPI_Finalize();
    return 0;
}
