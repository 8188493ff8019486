/** What the scale child process reports about one runtime. */
export interface ScaleReport {
  functions: number;
  startupMs: number;
  idleCpuPercent: number;
  rssMb: number;
  heapUsedMb: number;
}

/** Prefix of the child's report line on stdout. */
export const REPORT_PREFIX = "JETFN_BENCH_SCALE ";
