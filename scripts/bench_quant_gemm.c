#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <cblas.h>
#include "peftkit_kernels.h"
// Driver of scripts/bench_quant_gemm.sh: the int8 GEMM (pk_qgemm_rows, activations quantized per call) against
// the widen-a-tile + sgemm path of QuantizedMatrix.matmul (pk_dequantize_rows of 256-row tiles, cblas_sgemm),
// one thread, process CPU time, interleaved runs; and, per format and shape, whether the scalar, AVX2 and
// AVX-512 paths give the same bits and how far they are from the widened fp32 product.
void openblas_set_num_threads(int);
static double now(void){struct timespec t;clock_gettime(CLOCK_PROCESS_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static uint64_t s=88172645463325252ull; static uint64_t rnd(void){s^=s<<13;s^=s>>7;s^=s<<17;return s;}
static int bsz(int t){return t>=12&&t<=14?256:32;}
static int bby(int t){switch(t){case 8:return 34;case 2:return 18;case 3:return 20;case 6:return 22;case 7:return 24;case 12:return 144;case 13:return 176;case 14:return 210;}return 0;}
typedef struct { int8_t*xq; float*xd; int16_t*xs; int32_t*xo; float*xm; } Act;
static void quant(int t,const float*x,int N,int n,Act*a){
  for(int r=0;r<N;r++) pk_quantize_act(x+(size_t)r*n,n,a->xq+(size_t)r*n,a->xd+(size_t)r*(n/32),a->xs+(size_t)r*(n/16));
  pk_qgemm_prepare(t,n,N,a->xd,a->xs,a->xo,a->xm);
}
int main(int argc,char**argv){
  openblas_set_num_threads(1);
  int types[]={8,3,2,6,12,14,13}; const char*names[]={"Q8_0","Q4_1","Q4_0","Q5_0","Q4_K","Q6_K","Q5_K"};
  int shapes[][2]={{576,576},{192,576},{1536,576},{576,1536},{49152,576}};
  int N = argc>1?atoi(argv[1]):512, reps = argc>2?atoi(argv[2]):3, check = argc>3?atoi(argv[3]):1;
  printf("N=%d activation rows; GFLOP/s = 2*O*n*N / CPU time (1 thread), best of %d\n",N,reps);
  printf("%-5s %-11s | %-9s %-9s %-6s | %-9s %-6s | %-8s %-8s\n","type","O x n","sgemm","int8-512","x","int8-avx2","x","paths","err/bnd");
  for(int ti=0;ti<7;ti++) for(int si=0;si<5;si++){
    int t=types[ti], O=shapes[si][0], n=shapes[si][1];
    if(n%bsz(t)) continue;
    size_t rb=(size_t)n/bsz(t)*bby(t), bytes=rb*O;
    uint8_t*w=aligned_alloc(64,(bytes+63)/64*64); for(size_t i=0;i<bytes;i++) w[i]=rnd();
    for(size_t b=0;b<bytes/bby(t);b++){uint8_t*p=w+b*bby(t);
      if(t==14){p[208]=0;p[209]=0x20;} else {p[0]=0;p[1]=0x20; if(t==3||t==7||t==12||t==13){p[2]=0;p[3]=0xa0;}}}
    float*x=malloc(4*(size_t)N*n); for(size_t i=0;i<(size_t)N*n;i++) x[i]=((int)(rnd()%2001)-1000)/500.0f;
    Act a; int64_t nch=pk_qgemm_chunks(t,n);
    a.xq=malloc((size_t)N*n); a.xd=malloc(4*(size_t)N*n/32); a.xs=malloc(2*(size_t)N*n/16);
    a.xo=malloc(4*(size_t)N*nch); a.xm=malloc(4*(size_t)N*nch);
    void*scr=malloc(pk_qgemm_scratch_bytes(t,n));
    int tile=256; float*panel=malloc(4*(size_t)tile*n);
    float*y0=malloc(4*(size_t)N*O),*y1=malloc(4*(size_t)N*O),*y2=malloc(4*(size_t)N*O);
    int r = (double)O*n*N > 5e9 ? 1 : reps;
    double bs=1e9,b5=1e9,b2=1e9;
    for(int k=0;k<r;k++){
      double t0=now();
      for(int r0=0;r0<O;r0+=tile){int tt=O-r0<tile?O-r0:tile;
        pk_dequantize_rows(2,t,w+(size_t)r0*rb,rb,tt,n,panel,n);
        cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasTrans,N,tt,n,1,x,n,panel,n,0,y0+r0,O);}
      double t1=now(); quant(t,x,N,n,&a); pk_qgemm_rows(2,t,w,rb,0,O,n,N,a.xq,a.xd,a.xo,a.xm,y1,O,0,scr);
      double t2=now(); quant(t,x,N,n,&a); pk_qgemm_rows(1,t,w,rb,0,O,n,N,a.xq,a.xd,a.xo,a.xm,y2,O,0,scr);
      double t3=now();
      if(t1-t0<bs)bs=t1-t0; if(t2-t1<b5)b5=t2-t1; if(t3-t2<b2)b2=t3-t2;
    }
    double fl=2.0*O*n*N/1e9;
    // Paths: AVX-512 vs AVX2 bit for bit, scalar on the first rows; error vs the widened product / bound.
    int same = memcmp(y1,y2,4*(size_t)N*O)==0;
    double worst=0;
    if(check){
      int Nc = N<7?N:7, Oc = O<40?O:40; float*ys=malloc(4*(size_t)Nc*Oc);
      pk_qgemm_rows(0,t,w,rb,0,Oc,n,Nc,a.xq,a.xd,a.xo,a.xm,ys,Oc,0,scr);
      for(int c=0;c<Nc;c++) for(int o=0;o<Oc;o++) if(memcmp(&ys[c*Oc+o],&y1[(size_t)c*O+o],4)) same=0;
      float*wr=malloc(4*(size_t)n);
      for(int o=0;o<O;o+=O/37+1){ pk_dequantize_rows(0,t,w+(size_t)o*rb,rb,1,n,wr,n);
        for(int c=0;c<N;c+=N/5+1){ const float*xc=x+(size_t)c*n; double ex=0,bound=0;
          for(int g=0;g<n/32;g++){float am=0; for(int i=32*g;i<32*g+32;i++) if(fabsf(xc[i])>am) am=fabsf(xc[i]);
            double h=am/127.0/2; for(int i=32*g;i<32*g+32;i++){double aw=fabs(wr[i]); ex+=(double)wr[i]*xc[i]; bound+=h*aw+1e-5*aw*(fabs(xc[i])+h);}}
          double e=fabs(y1[(size_t)c*O+o]-ex)/bound; if(e>worst) worst=e; }}
      free(ys); free(wr);
    }
    printf("%-5s %5dx%-5d | %9.1f %9.1f %5.2fx | %9.1f %5.2fx | %-8s %.3f\n",names[ti],O,n,fl/bs,fl/b5,bs/b5,fl/b2,bs/b2,
           same?"same":"DIFFER",worst);
    fflush(stdout);
    free(w);free(x);free(a.xq);free(a.xd);free(a.xs);free(a.xo);free(a.xm);free(scr);free(panel);free(y0);free(y1);free(y2);
  }
}
